//! Start's state machine driven by a fake provider and a fake GitHub, without moto: what it does
//! when machines come online, end while booting, find no capacity, never come online, or when the
//! workflow is cancelled. The world (tests/) proves the same end to end against EC2's stand-in.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::wait::PollSchedule;
use super::*;
use crate::actions::Actions;
use crate::github::{GithubError, JitRunner, Removal, Runner, RunnerStatus};
use crate::inputs::{Inputs, RunnerScope, parse};
use crate::machine::failure::{Failure, Refusal, Refused};
use crate::machine::{
    Acquired as Got, Facts, Handoff, Health, Machine, MachineError, Owner, Release, Released, State,
};
use crate::modes::teardown::Left;
use crate::plan::{Market, tag};
use crate::retry::Backoff;
use crate::secret::Secret;

/// How a runner's machine behaves, by the runner's place in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Play {
    /// Boots, and its runner comes online.
    Online,
    /// Ends while it boots, saying why on its console.
    EndsWhileBooting,
    /// No candidate has capacity: no machine.
    NoCapacity,
    /// Boots for ever; its runner never comes online.
    NeverOnline,
}

#[derive(Default)]
struct FakeProvider {
    plays: Vec<Play>,
    acquired: Mutex<Vec<Machine>>,
    released: Mutex<Vec<(String, Release)>>,
    /// Told once a machine was acquired.
    first_machine: Notify,
}

impl FakeProvider {
    fn new(plays: &[Play]) -> Self {
        Self {
            plays: plays.to_vec(),
            ..Self::default()
        }
    }

    fn play_of(&self, id: &str) -> Play {
        let n: usize = id.trim_start_matches("m-").parse().unwrap_or(0);
        self.plays[n]
    }

    fn released(&self) -> Vec<(String, Release)> {
        self.released.lock().unwrap().clone()
    }
}

impl Provider for FakeProvider {
    fn noun(&self) -> &'static str {
        "instance"
    }

    async fn preflight(
        &self,
        _plan: &LaunchPlan,
        _handoff: &Handoff<'_>,
        _actions: &Actions,
    ) -> Result<String, Failure> {
        Ok("The fake provider could acquire it.".to_owned())
    }

    async fn acquire(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        _actions: &Actions,
    ) -> Result<Got, Failure> {
        let n = plan
            .runners
            .iter()
            .position(|r| r.name == handoff.runner.name)
            .unwrap();
        assert!(
            !handoff.jit_config.expose().is_empty(),
            "the runner's configuration is handed over"
        );
        if self.plays[n] == Play::NoCapacity {
            return Err(Refused::NoCapacity {
                tried: vec![Refusal {
                    candidate: "g5.xlarge in subnet-a (on-demand)".into(),
                    code: "InsufficientInstanceCapacity".into(),
                    advice: "try later".into(),
                    quota: None,
                }],
            }
            .into());
        }
        let machine = Machine {
            id: format!("m-{n}"),
            instance_type: "g5.xlarge".into(),
            availability_zone: Some("us-east-1a".into()),
            market: Market::OnDemand,
            state: State::Pending,
            state_reason: None,
            state_since: None,
            launched_at: None,
            tags: [
                (tag::LABEL, plan.label.clone()),
                (tag::RUNNER, handoff.runner.name.clone()),
                (tag::REPOSITORY, plan.binding.repository.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        };
        self.acquired.lock().unwrap().push(machine.clone());
        self.first_machine.notify_one();
        Ok(Got {
            machine,
            refused: Vec::new(),
        })
    }

    async fn health(&self, ids: &[String]) -> Result<Vec<(String, Health)>, MachineError> {
        Ok(ids
            .iter()
            .map(|id| {
                let h = match self.play_of(id) {
                    Play::Online => Health::Ready,
                    Play::EndsWhileBooting => Health::Gone {
                        why: "terminated".into(),
                        last_words: vec![
                            "gpu-runner: phase=gpu-probe status=failed reason=\"no driver\"".into(),
                        ],
                    },
                    Play::NoCapacity | Play::NeverOnline => Health::Booting,
                };
                (id.clone(), h)
            })
            .collect())
    }

    async fn last_words(&self, _id: &str) -> Vec<String> {
        vec!["gpu-runner: phase=runner status=starting".into()]
    }

    async fn find(
        &self,
        ids: &[String],
        owner: Option<Owner<'_>>,
    ) -> Result<Vec<Machine>, MachineError> {
        let released = self.released();
        Ok(self
            .acquired
            .lock()
            .unwrap()
            .iter()
            .filter(|m| {
                ids.contains(&m.id)
                    || matches!(owner, Some(Owner::Label { label, .. }) if m.label() == Some(label))
            })
            .map(|m| {
                let mut m = m.clone();
                if released.iter().any(|(id, _)| *id == m.id) {
                    m.state = State::Terminated;
                }
                m
            })
            .collect())
    }

    async fn release(
        &self,
        machines: &[Machine],
        how: Release,
    ) -> (Vec<Released>, Option<MachineError>) {
        let mut released = self.released.lock().unwrap();
        for m in machines {
            released.push((m.id.clone(), how));
        }
        let each = Released::Terminated {
            ran: Some(60),
            cost: None,
        };
        (vec![each; machines.len()], None)
    }

    async fn facts(&self, _machine: &Machine) -> Facts {
        Facts {
            price: None,
            gpu: Some("1 × NVIDIA A10G".into()),
            details: Vec::new(),
        }
    }
}

/// GitHub's runners, as the fake provider's machines would make them: a runner whose machine
/// plays `Online` is online as soon as it is registered.
struct FakeGithub {
    online: Vec<bool>,
    runners: Mutex<Vec<Runner>>,
    next_id: AtomicU64,
    deleted: Mutex<Vec<String>>,
}

impl FakeGithub {
    fn new(plays: &[Play]) -> Github<FakeGithub> {
        let registry = FakeGithub {
            online: plays.iter().map(|p| *p == Play::Online).collect(),
            runners: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            deleted: Mutex::new(Vec::new()),
        };
        Github::new(registry, &ctx(), RunnerScope::Repo, false)
    }
}

impl RunnerRegistry for FakeGithub {
    async fn create_jit_runner(
        &self,
        name: &str,
        labels: &[String],
    ) -> Result<JitRunner, GithubError> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let runner = Runner {
            id,
            name: name.to_owned(),
            status: RunnerStatus::Offline,
            busy: false,
            labels: labels.to_vec(),
        };
        self.runners.lock().unwrap().push(runner.clone());
        Ok(JitRunner {
            runner,
            encoded_jit_config: Secret::new(format!("jit-config-of-{name}")),
        })
    }

    async fn get_runner(&self, id: u64) -> Result<Option<Runner>, GithubError> {
        Ok(self
            .runners
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned())
    }

    async fn runners(&self) -> Result<Vec<Runner>, GithubError> {
        Ok(self
            .runners
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let n = (r.id - 1) as usize;
                let mut r = r.clone();
                if self.online.get(n) == Some(&true) {
                    r.status = RunnerStatus::Online;
                }
                r
            })
            .collect())
    }

    async fn delete_runner(&self, id: u64) -> Result<Removal, GithubError> {
        let mut runners = self.runners.lock().unwrap();
        let Some(at) = runners.iter().position(|r| r.id == id) else {
            return Ok(Removal::AlreadyGone);
        };
        let gone = runners.remove(at);
        self.deleted.lock().unwrap().push(gone.name);
        Ok(Removal::Deleted)
    }

    async fn active_runs(&self) -> Result<Vec<u64>, GithubError> {
        Ok(Vec::new())
    }

    async fn run_jobs(&self, _run_id: u64) -> Result<Vec<crate::github::Job>, GithubError> {
        Ok(Vec::new())
    }

    async fn cancel_run(&self, _run_id: u64) -> Result<(), GithubError> {
        Ok(())
    }

    async fn rerun_run(&self, _run_id: u64) -> Result<(), GithubError> {
        Ok(())
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(Clock::default())
    }
}

fn ctx() -> Context {
    let env: Env = [
        ("GITHUB_REPOSITORY", "octo/ml"),
        ("GITHUB_RUN_ID", "42"),
        ("GITHUB_RUN_ATTEMPT", "1"),
        (
            "GITHUB_WORKFLOW_REF",
            "octo/ml/.github/workflows/gpu.yml@refs/heads/main",
        ),
    ]
    .into_iter()
    .collect();
    Context::from_env(&env).unwrap()
}

fn plan(extra: &[(&str, &str)]) -> LaunchPlan {
    let mut env: Env = [
        ("INPUT_MODE", "start"),
        ("INPUT_GITHUB-TOKEN", "ghp_fake"),
        ("INPUT_AWS-REGION", "us-east-1"),
    ]
    .into_iter()
    .collect();
    for (k, v) in extra {
        env.set(format!("INPUT_{}", k.to_uppercase()), *v);
    }
    let Inputs::Start(inputs) = parse(&env).unwrap().inputs else {
        unreachable!()
    };
    plan::launch_plan(&inputs, &ctx(), Utc::now(), "abcd1234")
}

/// The log, as the runner would show it.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Run {
    outcome: Result<(), Error>,
    log: String,
    outputs: BTreeMap<String, String>,
    summary: String,
    released: Vec<(String, Release)>,
    deleted: Vec<String>,
    /// The plan's runner names, in its order.
    names: Vec<String>,
}

/// Drives start with these plays; `cancel_after_first_machine` cancels once a machine exists.
async fn drive_with(
    extra: &[(&str, &str)],
    plays: &[Play],
    cancel_after_first_machine: bool,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let env: Env = [
        ("GITHUB_OUTPUT", file("output")),
        ("GITHUB_STATE", file("state")),
        ("GITHUB_STEP_SUMMARY", file("summary")),
    ]
    .into_iter()
    .collect();
    let log = Log::default();
    let actions = Actions::with_writer(&env, Box::new(log.clone()));
    let plan = plan(extra);
    let provider = FakeProvider::new(plays);
    let github = FakeGithub::new(plays);
    let package = RunnerPackage::new(
        "https://example.test/{version}/{arch}",
        "2.330.0",
        crate::boot::Arch::X64,
        "00",
    );
    // A fast clock (a startup timeout of a minute passes in 60 ms), and a look every millisecond.
    let readiness = Readiness {
        schedule: PollSchedule {
            steps: Vec::new(),
            then: std::time::Duration::from_millis(1),
        },
        ..Readiness::of(
            &plan,
            Clock::from_env(&[("GPU_RUNNER_CLOCK_SCALE", "1000")].into_iter().collect()),
        )
    };
    let cancelled = async {
        if cancel_after_first_machine {
            provider.first_machine.notified().await;
            "SIGINT"
        } else {
            std::future::pending().await
        }
    };
    let outcome = drive(
        &plan, &provider, &github, &package, &actions, &readiness, cancelled,
    )
    .await;
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let outputs = file_commands(&read("output"));
    let log_text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    Run {
        outcome,
        log: log_text,
        outputs,
        summary: read("summary"),
        released: provider.released(),
        deleted: github.registry.deleted.lock().unwrap().clone(),
        names: plan.runners.iter().map(|r| r.name.clone()).collect(),
    }
}

/// `NAME<<DELIM`, the value, `DELIM`: the last value of each name.
fn file_commands(text: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((name, delimiter)) = line.split_once("<<") else {
            continue;
        };
        let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
        values.insert(name.to_owned(), value.join("\n"));
    }
    values
}

#[tokio::test]
async fn every_runner_online_reports_them_and_releases_nothing() {
    let run = drive_with(&[("count", "2")], &[Play::Online, Play::Online], false).await;
    assert!(run.outcome.is_ok(), "{:?}", run.outcome);
    assert_eq!(run.outputs["instance-ids"], r#"["m-0","m-1"]"#);
    assert!(
        run.summary.contains("### GPU runner online"),
        "{}",
        run.summary
    );
    assert!(run.summary.contains("1 × NVIDIA A10G"), "{}", run.summary);
    assert_eq!(run.released, []);
    assert_eq!(run.deleted, Vec::<String>::new());
    assert!(!run.log.contains("jit-config-of-"), "{}", run.log);
}

#[tokio::test]
async fn a_machine_that_ends_while_booting_rolls_back_every_runner_and_machine() {
    let run = drive_with(
        &[("count", "2")],
        &[Play::Online, Play::EndsWhileBooting],
        false,
    )
    .await;
    let Err(Error::AfterLaunch { cause, rollback }) = &run.outcome else {
        panic!("{:?}", run.outcome)
    };
    let Error::Startup { stalled, console } = cause.as_ref() else {
        panic!("{cause:?}")
    };
    assert_eq!(
        stalled.to_string(),
        "m-1 ended while it booted (terminated)"
    );
    assert!(console[0].contains("phase=gpu-probe status=failed"));
    assert_eq!(rollback.left, Left::Clear);
    let mut released = run.released.clone();
    released.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        released,
        [
            ("m-0".to_owned(), Release::Terminate),
            ("m-1".to_owned(), Release::Terminate)
        ]
    );
    assert_eq!(run.deleted.len(), 2, "both runners carry the label");
}

#[tokio::test]
async fn allow_partial_keeps_the_runners_that_came_online_and_removes_the_rest() {
    let run = drive_with(
        &[("count", "3"), ("allow-partial", "true")],
        &[Play::Online, Play::NoCapacity, Play::EndsWhileBooting],
        false,
    )
    .await;
    assert!(run.outcome.is_ok(), "{:?}", run.outcome);
    assert_eq!(run.released, [("m-2".to_owned(), Release::Terminate)]);
    let mut deleted = run.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, run.names[1..]);
    assert!(
        run.log.contains("1 of 3 GPU runners came online"),
        "{}",
        run.log
    );
    assert_eq!(run.outputs["instance-ids"], r#"["m-0"]"#);
}

#[tokio::test]
async fn keep_on_failure_keeps_the_machine_and_removes_its_runner() {
    let run = drive_with(
        &[("keep-on-failure", "true")],
        &[Play::EndsWhileBooting],
        false,
    )
    .await;
    let Err(Error::AfterLaunch { rollback, .. }) = &run.outcome else {
        panic!("{:?}", run.outcome)
    };
    assert_eq!(
        rollback.left,
        Left::Kept {
            ids: vec!["m-0".into()],
            runner_error: None
        }
    );
    assert_eq!(run.released, []);
    assert_eq!(run.deleted.len(), 1);
}

#[tokio::test]
async fn a_runner_that_never_comes_online_times_out_and_is_rolled_back() {
    let run = drive_with(
        &[("startup-timeout-minutes", "1")],
        &[Play::NeverOnline],
        false,
    )
    .await;
    let Err(Error::AfterLaunch { cause, rollback }) = &run.outcome else {
        panic!("{:?}", run.outcome)
    };
    assert!(
        cause
            .to_string()
            .contains("did not come online within startup-timeout-minutes (1)"),
        "{cause}"
    );
    assert_eq!(rollback.left, Left::Clear);
    assert_eq!(run.released, [("m-0".to_owned(), Release::Terminate)]);
}

#[tokio::test]
async fn a_cancel_while_the_machine_boots_rolls_back_what_exists() {
    let run = drive_with(&[], &[Play::NeverOnline], true).await;
    let Err(Error::Cancelled {
        signal, rollback, ..
    }) = &run.outcome
    else {
        panic!("{:?}", run.outcome)
    };
    assert_eq!(*signal, "SIGINT");
    let rollback = rollback.as_ref().unwrap();
    assert_eq!(rollback.left, Left::Clear);
    assert!(
        rollback
            .to_string()
            .starts_with("Rolled back: instance m-0 terminated"),
        "{rollback}"
    );
    assert_eq!(run.released, [("m-0".to_owned(), Release::Terminate)]);
    assert_eq!(run.deleted.len(), 1);
}
