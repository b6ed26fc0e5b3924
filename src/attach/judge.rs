//! attach's side of the job-started hook: a task that answers the hook's questions on the Unix
//! socket with the guard's verdict, asking GitHub when the guard needs a commenter's permission,
//! and tells the serving loop which job started.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::actions::Masker;
use crate::clock::Clock;
use crate::guard;

use super::args::Target;
use super::credentials::Credentials;
use super::hook::{JobFacts, Judged, Policy, Verdict};

/// What the hook server learned of a job.
pub struct HookEvent {
    pub facts: JobFacts,
    /// `None` while attach still judges the job: a job arrived.
    pub verdict: Option<Verdict>,
    /// The process group of the hook, which is its runner's: a verdict that comes after its
    /// runner ended must not speak for the next runner's job.
    pub runner_group: Option<u32>,
}

impl HookEvent {
    /// Whether the event is about the job of the runner whose process group is `group` (an
    /// event without one, from a hook whose group could not be read, is taken as this runner's).
    pub fn is_for(&self, group: u32) -> bool {
        self.runner_group.is_none_or(|g| g == group)
    }
}

/// Judges every job the hook asks about, on its own task, and tells the loop.
pub async fn serve(
    listener: UnixListener,
    policy: Arc<Policy>,
    approvals: Arc<Approvals>,
    events: mpsc::UnboundedSender<HookEvent>,
    jobs_uid: u32,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // The socket is open to every user (the hook runs as the job's); only the job's user
        // may tell attach about a job.
        let Ok(peer) = stream.peer_cred() else {
            continue;
        };
        if peer.uid() != jobs_uid {
            continue;
        }
        // The hook's Runner.Worker, found while the hook surely lives: a refused job's worker is
        // killed before the hook hears the verdict (see `worker`).
        let hook = peer.pid().and_then(|pid| u32::try_from(pid).ok());
        let worker = hook.and_then(super::worker::above);
        let runner_group = hook.and_then(super::worker::group_of);
        let (policy, approvals, events) = (policy.clone(), approvals.clone(), events.clone());
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            if !matches!(
                tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await,
                Ok(Ok(n)) if n > 0
            ) {
                return;
            }
            let Ok(facts) = serde_json::from_str::<JobFacts>(&line) else {
                let answer = Verdict::refuse("the hook sent what gpu-runner cannot read");
                let _ = write
                    .write_all(format!("{}\n", serde_json::json!(answer)).as_bytes())
                    .await;
                return;
            };
            let _ = events.send(HookEvent {
                facts: facts.clone(),
                verdict: None,
                runner_group,
            });
            let verdict = match policy.judge(&facts) {
                Judged::Verdict(v) => v,
                Judged::IfApprover { login, repository } => {
                    approvals.check(&login, &repository).await
                }
            };
            // The loop hears the verdict before the runner can end: a refused job is counted as
            // refused, with its reason, not as a job that ended while it was judged.
            let _ = events.send(HookEvent {
                facts,
                verdict: Some(verdict.clone()),
                runner_group,
            });
            if !verdict.accept
                && let Some(worker) = worker
            {
                let _ = tokio::task::spawn_blocking(move || super::worker::end(worker)).await;
            }
            let _ = write
                .write_all(format!("{}\n", serde_json::json!(verdict)).as_bytes())
                .await;
        });
    }
}

/// Asks GitHub whether a comment's author may approve a run.
pub struct Approvals {
    pub credentials: Credentials,
    pub api_url: String,
    pub clock: Clock,
    pub masker: Masker,
}

impl Approvals {
    async fn check(&self, login: &str, repository: &str) -> Verdict {
        let Some((owner, repo)) = repository.split_once('/') else {
            return Verdict::refuse(format!("{repository} is not OWNER/REPO"));
        };
        let target = Target::Repo {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
        };
        let registry = self
            .credentials
            .registry(&self.api_url, &target, self.clock, &self.masker)
            .await;
        let permission = match registry {
            Ok(r) => r
                .collaborator_permission(login)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match permission {
            Ok(p) => match guard::check_approval(login, &p, repository) {
                Ok(()) => Verdict {
                    accept: true,
                    reason: format!("{login}, who wrote the comment, has {p} permission"),
                },
                Err(guard::Untrusted(why)) => Verdict::refuse(why),
            },
            Err(e) => Verdict::refuse(format!(
                "GitHub could not say whether the comment's author {login} has write access \
                 ({e})"
            )),
        }
    }
}
