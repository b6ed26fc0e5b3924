//! The one executor of a planned teardown: machines, found by id and by gpu-runner's tags, are
//! released as their lifecycle asks, and runners, found by label, are removed. Stop, the post
//! step, start's rollback, cancel and `allow-partial`, and cleanup share it, so that each of them
//! tolerates the same things (a machine already gone, a runner already removed, ids that were
//! lost) and reports the same typed outcomes.

use chrono::{DateTime, Utc};

use crate::actions::{Actions, Markdown};
use crate::github::{GithubError, Removal, RunnerRegistry};
use crate::machine::{Lifecycle, Machine, MachineError, Owner, Provider, Released};
use crate::modes::Github;
use crate::modes::failure::Error;

mod outcome;

pub use outcome::{Left, Outcome, Rollback};

/// One thing looked at, and what was done to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub what: String,
    /// The provider's noun for a machine ("instance"), or "runner".
    pub kind: &'static str,
    pub outcome: Outcome,
}

/// What a teardown did, and its first error: every item is tried even when one fails.
#[derive(Debug, Default)]
pub struct Teardown {
    pub rows: Vec<Row>,
    pub error: Option<Error>,
    /// Machines were let go (or found ended): a runner GitHub still shows busy is about to lose
    /// its job, so its removal is worth waiting for.
    machines_released: bool,
    /// The machines their provider took away, in words ("AWS reclaimed the spot instance i-…
    /// at …"): the jobs on them were interrupted, not failed.
    pub interrupted: Vec<crate::machine::Interruption>,
}

/// What a teardown found: this repository's machines, and any it was asked about by id that
/// another repository acquired (or that gpu-runner did not launch at all).
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub ours: Vec<Machine>,
    pub foreign: Vec<Machine>,
}

/// Machines by id, and by owner: a start that was cancelled may never have reported its ids.
/// Only `repository`'s are ever touched: an id given by mistake (or on purpose) that names
/// another repository's machine in the same account is left alone.
pub async fn find(
    provider: &impl Provider,
    ids: &[String],
    owner: Option<Owner<'_>>,
    repository: &str,
) -> Result<Found, MachineError> {
    let found = provider.find(ids, owner).await?;
    let (ours, foreign) = found.into_iter().partition(|m| m.belongs_to(repository));
    Ok(Found { ours, foreign })
}

impl Teardown {
    fn row(&mut self, what: &str, kind: &'static str, outcome: Outcome) {
        self.rows.push(Row {
            what: what.to_owned(),
            kind,
            outcome,
        });
    }

    /// Releases this repository's live machines that were found, each as its lifecycle asks;
    /// `asked` ids that were not found are reported gone, another repository's are left alone.
    pub async fn release(&mut self, provider: &impl Provider, asked: &[String], found: &Found) {
        let noun = provider.noun();
        for m in &found.foreign {
            let owner = m.repository().map(str::to_owned);
            self.row(&m.id, noun, Outcome::LeftAlone { owner });
        }
        for id in asked {
            if !found.ours.iter().chain(&found.foreign).any(|m| &m.id == id) {
                self.row(id, noun, Outcome::Released(Released::AlreadyGone));
            }
        }
        // What took a machine away is read before it is released: a pod's conditions go with it.
        let mut reclaimed_at = std::collections::HashMap::new();
        for m in found.ours.iter().filter(|m| m.reclaimed()) {
            let at = crate::machine::reclaimed_at(&provider.last_words(&m.id).await);
            self.interrupted
                .push(crate::machine::interruption(m, at.as_deref()));
            reclaimed_at.insert(m.id.clone(), at);
        }
        let (ended, live): (Vec<&Machine>, Vec<&Machine>) =
            found.ours.iter().partition(|m| m.state.is_ending());
        self.machines_released |= !ended.is_empty();
        for m in ended {
            let outcome = match reclaimed_at.get(&m.id) {
                Some(at) => Outcome::Reclaimed { at: at.clone() },
                None => Outcome::AlreadyEnded,
            };
            self.row(&m.id, noun, outcome);
        }
        for lifecycle in [Lifecycle::Ephemeral, Lifecycle::Pooled, Lifecycle::Attached] {
            let these: Vec<Machine> = live
                .iter()
                .filter(|m| m.lifecycle() == lifecycle)
                .map(|m| (*m).clone())
                .collect();
            if these.is_empty() {
                continue;
            }
            let how = lifecycle.release();
            let (released, error) = provider.release(&these, how).await;
            for (m, r) in these.iter().zip(released) {
                let outcome = match r {
                    Released::Failed => Outcome::NotReleased(how),
                    r => Outcome::Released(r),
                };
                self.row(&m.id, noun, outcome);
            }
            match error {
                Some(e) => {
                    self.error.get_or_insert(e.into());
                }
                None => self.machines_released = true,
            }
        }
        for (name, done) in provider.forget_handoffs(&found.ours).await {
            let outcome = match done {
                Ok(()) => Outcome::HandoffDeleted,
                Err(e) => {
                    self.error.get_or_insert(e.into());
                    Outcome::HandoffNotDeleted
                }
            };
            self.row(&name, "parameter", outcome);
        }
    }

    /// Removes every runner that carries one of `labels`, or a label that starts with `prefix`.
    pub async fn remove_runners(
        &mut self,
        github: &Github<impl RunnerRegistry + Sync>,
        labels: &[String],
        prefix: Option<&str>,
    ) {
        let runners = match github.registry.runners().await {
            Ok(runners) => runners,
            Err(e) => {
                for label in labels {
                    self.row(label, "runner", Outcome::CouldNotListRunners);
                }
                self.error.get_or_insert(github.error(e));
                return;
            }
        };
        for label in labels {
            if !runners.iter().any(|r| r.labels.contains(label)) {
                self.row(label, "runner", Outcome::RunnerAlreadyRemoved);
            }
        }
        let chosen = runners.iter().filter(|r| {
            r.labels
                .iter()
                .any(|l| labels.contains(l) || prefix.is_some_and(|p| l.starts_with(p)))
        });
        for r in chosen {
            self.remove_runner(github, r.id, &r.name).await;
        }
    }

    /// Removes one runner by id.
    pub async fn remove_runner(
        &mut self,
        github: &Github<impl RunnerRegistry + Sync>,
        id: u64,
        name: &str,
    ) {
        let delete = || github.registry.delete_runner(id);
        let removed = match delete().await {
            // GitHub answers 422 while it still sees the runner's job; once the machine is
            // gone, it fails that job within moments to minutes, so wait for it a while.
            Err(e) if e.runner_busy() && self.machines_released => {
                tracing::info!(runner = %name, "GitHub still shows a job on the runner; waiting");
                let busy =
                    |e: &GithubError| e.runner_busy().then_some(None).or_else(|| e.retryable());
                github
                    .registry
                    .backoff()
                    .run(
                        "removing a runner that is still running a job",
                        busy,
                        delete,
                    )
                    .await
            }
            other => other,
        };
        let outcome = match removed {
            Ok(Removal::Deleted) => Outcome::RunnerRemoved,
            Ok(Removal::AlreadyGone) => Outcome::RunnerAlreadyRemoved,
            Err(e) => {
                let outcome = if e.runner_busy() {
                    Outcome::RunnerBusy
                } else {
                    Outcome::CouldNotRemoveRunner
                };
                self.error.get_or_insert(github.error(e));
                outcome
            }
        };
        self.row(name, "runner", outcome);
    }

    /// GitHub could not be reached at all: say which runners stay.
    pub fn github_unreachable(&mut self, labels: &[String], error: Error) {
        for label in labels {
            self.row(label, "runner", Outcome::GithubUnreachable);
        }
        self.error.get_or_insert(error);
    }

    /// What is left behind, for an error message: empty when everything is gone.
    pub fn left(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| !r.outcome.ok())
            .map(|r| format!("{} {} ({})", r.kind, r.what, r.outcome))
            .collect()
    }

    /// What was removed, one phrase each.
    pub fn done(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.outcome.ok())
            .map(|r| format!("{} {} {}", r.kind, r.what, r.outcome))
            .collect()
    }

    /// Every row in the log and, under `heading`, as a table in the summary.
    pub fn report(&self, heading: &str, actions: &Actions) -> Result<(), Error> {
        for r in &self.rows {
            actions.info(&format!("{} {}: {}", r.kind, r.what, r.outcome));
        }
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| vec![r.what.clone(), r.kind.to_owned(), r.outcome.to_string()])
            .collect();
        let mut summary = Markdown::new()
            .heading(3, heading)
            .table(&["What", "Kind", "Done"], &rows);
        for i in &self.interrupted {
            summary = summary.paragraph(&format!(
                "{}: the GPU job was interrupted, not failed.",
                i.how
            ));
        }
        actions.append_summary(&summary.build())?;
        Ok(())
    }

    /// The first error, if any.
    pub fn finish(self) -> Result<(), Error> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A start's rollback, as its error tells it: what was removed and what is left.
    pub fn rollback(self, label: &str, ends_by: DateTime<Utc>) -> Rollback {
        let removed = self.done();
        let remaining = self.left();
        let why = self.error.map(|e| e.to_string());
        let left = match (remaining.is_empty(), why) {
            (true, None) => Left::Clear,
            (true, Some(why)) => Left::Unknown { why },
            (false, why) => Left::Remaining {
                what: remaining,
                why,
            },
        };
        Rollback {
            removed,
            left,
            label: label.to_owned(),
            ends_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Release;

    fn rollback(removed: &[&str], left: Left) -> String {
        Rollback {
            removed: removed.iter().map(|r| (*r).to_owned()).collect(),
            left,
            label: "gpu-runner-1-1-abc".into(),
            ends_by: DateTime::from_timestamp(0, 0).unwrap_or_default(),
        }
        .to_string()
    }

    #[test]
    fn a_rollback_says_what_was_removed_and_what_is_left() {
        assert_eq!(
            rollback(&["instance i-1 terminated"], Left::Clear),
            "Rolled back: instance i-1 terminated."
        );
        assert_eq!(
            rollback(&[], Left::Clear),
            "Rolled back: nothing had been created."
        );
        let left = rollback(
            &["runner r removed"],
            Left::Remaining {
                what: vec!["instance i-1 (could not terminate)".into()],
                why: Some("AWS TerminateInstances failed".into()),
            },
        );
        assert!(left.starts_with(
            "Rolled back: runner r removed. Left behind: instance i-1 (could not terminate) \
             (AWS TerminateInstances failed); the instance ends itself by 1970-01-01T00:00:00Z, \
             or run mode: stop with label gpu-runner-1-1-abc"
        ));
        let unknown = rollback(
            &[],
            Left::Unknown {
                why: "throttled".into(),
            },
        );
        assert!(unknown.contains("What is left could not be seen (throttled)"));
        let kept = rollback(
            &[],
            Left::Kept {
                ids: vec!["i-1".into()],
                runner_error: None,
            },
        );
        assert!(kept.starts_with("Left behind: kept i-1 for debugging (keep-on-failure)"));
    }

    #[test]
    fn outcomes_read_as_before_and_know_what_may_still_bill() {
        let terminated = Outcome::Released(Released::Terminated {
            ran: Some(185),
            cost: Some("≈ $0.05".into()),
        });
        assert_eq!(
            terminated.to_string(),
            "terminated after 3 min 5 s (≈ $0.05)"
        );
        assert!(terminated.ok());
        assert!(!Outcome::NotReleased(Release::Terminate).ok());
        assert_eq!(
            Outcome::NotReleased(Release::Terminate).to_string(),
            "could not terminate"
        );
        assert!(Outcome::AlreadyEnded.was_gone());
        assert!(!Outcome::RunnerRemoved.was_gone());
        assert!(!Outcome::RunnerBusy.ok());
    }
}
