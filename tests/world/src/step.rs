//! Runs the real `gpu-runner` binary the way the Actions runner does: `INPUT_*` variables, the
//! `GITHUB_*` context, and fresh file-command files; then reads back what landed where.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use gpu_runner::inputs::spec::env_var as input_var;

pub const TOKEN: &str = "ghp_integration-test-token-0123456789";

#[must_use]
#[derive(Clone)]
pub struct Step {
    binary: PathBuf,
    vars: BTreeMap<String, String>,
    runner: bool,
    post: bool,
}

impl Step {
    /// A step of `binary` with only the given mode; add inputs with `input`.
    pub fn mode(binary: impl Into<PathBuf>, mode: &str) -> Self {
        let mut vars = BTreeMap::new();
        for (k, v) in [
            ("GITHUB_REPOSITORY", "octo/ml"),
            ("GITHUB_RUN_ID", "4242"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_JOB", "start"),
            // The runner always names the event that started the run.
            ("GITHUB_EVENT_NAME", "push"),
        ] {
            vars.insert(k.to_owned(), v.to_owned());
        }
        let step = Self {
            binary: binary.into(),
            vars,
            runner: true,
            post: false,
        };
        step.input("mode", mode)
    }

    /// `mode: start` with a token and a region: the smallest valid start.
    pub fn start(binary: impl Into<PathBuf>) -> Self {
        Self::mode(binary, "start")
            .input("github-token", TOKEN)
            .input("aws-region", "us-east-1")
    }

    pub fn stop(binary: impl Into<PathBuf>) -> Self {
        Self::mode(binary, "stop").input("github-token", TOKEN)
    }

    /// Points the step at `world` and gives it the inputs a workflow there would.
    pub fn in_world(mut self, world: &crate::World) -> Self {
        for (k, v) in world.action_env() {
            self = self.env(&k, &v);
        }
        let inputs = match self.vars.get("INPUT_MODE").map(String::as_str) {
            Some("start") => world.start_inputs(),
            Some(mode) => world.inputs(mode),
            None => Vec::new(),
        };
        for (k, v) in inputs {
            self = self.input(&k, &v);
        }
        self
    }

    /// Passes a start's outputs to this (stop) step, as `${{ needs.start.outputs.* }}` does.
    pub fn outputs_of(mut self, start: &Outcome) -> Self {
        let outputs = start.outputs();
        for name in ["label", "instance-ids", "region"] {
            self = self.input(name, outputs.get(name).map(String::as_str).unwrap_or(""));
        }
        self
    }

    /// Gives this (post) step the state a start saved, as `STATE_*` variables.
    pub fn state_of(mut self, start: &Outcome) -> Self {
        for (k, v) in start.state() {
            self = self.env(&format!("STATE_{k}"), &v);
        }
        self
    }

    /// Sets an input as the runner does: `INPUT_` + upper-cased name, hyphens kept.
    pub fn input(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(input_var(name), value.to_owned());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Several variables at once, such as [`crate::World::triggered_by`]'s.
    pub fn envs(mut self, vars: &[(String, String)]) -> Self {
        for (name, value) in vars {
            self.vars.insert(name.clone(), value.clone());
        }
        self
    }

    pub fn unset(mut self, name: &str) -> Self {
        self.vars.remove(name);
        self
    }

    /// Run as a person would in a terminal: no runner files, no `GITHUB_ACTIONS`.
    pub fn by_hand(mut self) -> Self {
        self.runner = false;
        self
    }

    /// Run as the action's `post-entrypoint`.
    pub fn post(mut self) -> Self {
        self.post = true;
        self
    }

    pub fn run(self) -> Outcome {
        self.spawn().wait()
    }

    /// Starts the step and returns at once, to signal it while it runs.
    pub fn spawn(self) -> Running {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Files {
            output: dir.path().join("output"),
            state: dir.path().join("state"),
            summary: dir.path().join("summary"),
        };
        let binary = self.binary.clone();
        let program = if self.post {
            let link = dir.path().join("gpu-runner-post");
            std::os::unix::fs::symlink(&binary, &link).expect("link");
            link
        } else {
            binary
        };
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(dir.path())
            .envs(with_declared_defaults(&self.vars))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.runner {
            cmd.env("GITHUB_ACTIONS", "true")
                .env("GITHUB_OUTPUT", &files.output)
                .env("GITHUB_STATE", &files.state)
                .env("GITHUB_STEP_SUMMARY", &files.summary);
        }
        let child = cmd.spawn().expect("run gpu-runner");
        Running {
            child,
            files,
            _dir: dir,
        }
    }
}

/// Every input of `action.yml` that declares a default, with that default: the runner passes them
/// to the action whether or not the workflow sets them (actions/runner `ActionRunner.cs` fills the
/// inputs from the manifest's defaults before the step's own `with:` values are applied).
pub fn declared_defaults() -> &'static BTreeMap<String, String> {
    static DEFAULTS: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../action.yml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let manifest: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("action.yml: {e}"));
        let mut defaults = BTreeMap::new();
        if let Some(inputs) = manifest["inputs"].as_mapping() {
            for (name, input) in inputs {
                let (Some(name), Some(default)) = (name.as_str(), input.get("default")) else {
                    continue;
                };
                let value = match default {
                    serde_yaml::Value::String(s) => s.clone(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    serde_yaml::Value::Number(n) => n.to_string(),
                    _ => String::new(),
                };
                defaults.insert(input_var(name), value);
            }
        }
        defaults
    })
}

/// The step's variables with every declared default the workflow did not set, as the runner
/// passes them: the workflow's values win.
fn with_declared_defaults(vars: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut all = declared_defaults().clone();
    all.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    all
}

/// A step under way.
pub struct Running {
    child: Child,
    files: Files,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Sends a signal (`TERM`, `INT`, `KILL`) to the step's process, as the runner does on cancel.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "could not send SIG{name}");
    }

    /// Waits for the step to end, and measures its peak memory (resident set, KiB) as the kernel
    /// counted it.
    pub fn wait_measured(mut self) -> (Outcome, Option<u64>) {
        let read_all = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut bytes);
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = read_all(self.child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = read_all(self.child.stderr.take().map(|p| Box::new(p) as _));
        let pid = libc::pid_t::try_from(self.child.id()).unwrap_or(0);
        // The kernel's `ru_maxrss` of a child counts the parent's resident set at the spawn (exec
        // keeps the highest of the old and new address spaces), so the peak is read from the
        // child's own address space, `VmHWM`, until it exits.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut peak: Option<u64> = None;
                let status = format!("/proc/{pid}/status");
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let hwm = std::fs::read_to_string(&status).ok().and_then(|text| {
                        text.lines()
                            .find_map(|l| l.strip_prefix("VmHWM:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    });
                    if let Some(kib) = hwm {
                        peak = Some(peak.map_or(kib, |p: u64| p.max(kib)));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak
            })
        };
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain data that wait4 fills in; pid is our own child, waited once.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let code = (waited == pid && libc::WIFEXITED(status)).then(|| libc::WEXITSTATUS(status));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let outcome = Outcome {
            code,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
            output_file: read(&self.files.output),
            state_file: read(&self.files.state),
            summary: read(&self.files.summary),
        };
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let peak = watcher.join().ok().flatten().filter(|_| waited == pid);
        // What the kernel counted bounds it from above.
        let peak = peak.map(|p| p.min(u64::try_from(usage.ru_maxrss).unwrap_or(u64::MAX)));
        (outcome, peak)
    }

    /// Waits for the step to end and reads back what it wrote.
    pub fn wait(self) -> Outcome {
        let out = self.child.wait_with_output().expect("wait for gpu-runner");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            output_file: read(&self.files.output),
            state_file: read(&self.files.state),
            summary: read(&self.files.summary),
        }
    }
}

struct Files {
    output: PathBuf,
    state: PathBuf,
    summary: PathBuf,
}

#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub output_file: String,
    pub state_file: String,
    pub summary: String,
}

impl Outcome {
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success:\n{self:#?}");
        self
    }

    #[track_caller]
    pub fn failure(&self) -> &Self {
        assert_eq!(self.code, Some(1), "expected exit code 1:\n{self:#?}");
        self
    }

    /// Workflow commands of one kind (`error`, `warning`, `notice`), as printed.
    pub fn commands(&self, kind: &str) -> Vec<&str> {
        let prefix = format!("::{kind}");
        self.stdout
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{prefix}::")) || l.starts_with(&format!("{prefix} "))
            })
            .collect()
    }

    pub fn errors(&self) -> Vec<&str> {
        self.commands("error")
    }

    /// Outputs as the runner reads GITHUB_OUTPUT (the `NAME<<DELIM` form).
    pub fn outputs(&self) -> BTreeMap<String, String> {
        read_file_command(&self.output_file)
    }

    pub fn state(&self) -> BTreeMap<String, String> {
        read_file_command(&self.state_file)
    }

    /// Everything the step produced, for secret scans.
    pub fn everything(&self) -> String {
        [
            &self.stdout,
            &self.stderr,
            &self.output_file,
            &self.state_file,
            &self.summary,
        ]
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n")
    }
}

/// Parses a file-command file like the runner: `NAME=VALUE` or `NAME<<DELIM` … `DELIM`; panics on
/// anything the runner would refuse.
pub fn read_file_command(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            loop {
                let l = lines
                    .next()
                    .unwrap_or_else(|| panic!("delimiter {delim} never closed in:\n{text}"));
                if l == delim {
                    break;
                }
                value.push(l);
            }
            map.insert(name.to_owned(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            map.insert(name.to_owned(), value.to_owned());
        } else {
            panic!("the runner would refuse this line: {line:?}");
        }
    }
    map
}
