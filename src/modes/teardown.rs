//! Removing what starts created: instances, found by id and by gpu-runner's tags, and runners,
//! found by label. Stop, the post step, start's rollback and cancel, and cleanup share it, so that
//! each of them tolerates the same things: an instance already gone, a runner already removed,
//! ids that were lost.

use chrono::Utc;

use crate::actions::{Actions, Markdown};
use crate::cloud::{Cloud, CloudError, Instance, Tagged};
use crate::error::Error;
use crate::github::{Removal, Runner, RunnerRegistry};
use crate::modes::Github;
use crate::pricing;

/// One thing looked at, and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub what: String,
    pub kind: &'static str,
    pub done: String,
    /// False when it may still exist (and bill).
    pub ok: bool,
}

/// What a teardown did, and its first error: every item is tried even when one fails.
#[derive(Debug, Default)]
pub struct Teardown {
    pub rows: Vec<Row>,
    pub error: Option<Error>,
    /// Instances were terminated (or found ended): a runner GitHub still shows busy is about to
    /// lose its job, so its removal is worth waiting for.
    instances_ending: bool,
}

/// What a teardown found: this repository's instances, and any it was asked about by id that
/// another repository launched (or that gpu-runner did not launch at all).
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub ours: Vec<Instance>,
    pub foreign: Vec<Instance>,
}

/// Instances by id, and by tag: a start that was cancelled may never have reported its ids. Only
/// `repository`'s are ever touched: an id given by mistake (or on purpose) that names another
/// repository's instance in the same account is left alone.
pub async fn find(
    cloud: &impl Cloud,
    ids: &[String],
    tagged: Option<Tagged<'_>>,
    repository: &str,
) -> Result<Found, CloudError> {
    let mut found = cloud.describe(ids).await?;
    if let Some(tagged) = tagged {
        for i in cloud.find(tagged).await? {
            if !found.iter().any(|f| f.id == i.id) {
                found.push(i);
            }
        }
    }
    let (ours, foreign) = found.into_iter().partition(|i| i.belongs_to(repository));
    Ok(Found { ours, foreign })
}

impl Teardown {
    fn row(&mut self, what: &str, kind: &'static str, done: impl Into<String>, ok: bool) {
        self.rows.push(Row {
            what: what.to_owned(),
            kind,
            done: done.into(),
            ok,
        });
    }

    /// Terminates the live instances of this repository that were found; `asked` ids that were
    /// not found are reported gone, another repository's are left alone.
    pub async fn terminate(&mut self, cloud: &impl Cloud, asked: &[String], found: &Found) {
        for i in &found.foreign {
            let whose = match i.repository() {
                Some(r) => format!("it was launched for {r}"),
                None => "it carries no gpu-runner:repository tag".to_owned(),
            };
            self.row(&i.id, "instance", format!("left alone: {whose}"), true);
        }
        for id in asked {
            if !found.ours.iter().chain(&found.foreign).any(|i| &i.id == id) {
                self.row(id, "instance", "already gone", true);
            }
        }
        let found = &found.ours;
        let (ended, live): (Vec<&Instance>, Vec<&Instance>) =
            found.iter().partition(|i| i.state.is_ending());
        self.instances_ending |= !ended.is_empty();
        for i in ended {
            self.row(&i.id, "instance", "already ended", true);
        }
        let ids: Vec<String> = live.iter().map(|i| i.id.clone()).collect();
        match cloud.terminate(&ids).await {
            Ok(()) => {
                self.instances_ending |= !live.is_empty();
                for i in live {
                    let minutes = i.launched_at.map(|t| (Utc::now() - t).num_minutes().max(0));
                    let price = pricing::price(
                        cloud,
                        &i.instance_type,
                        i.market,
                        i.availability_zone.as_deref(),
                    )
                    .await;
                    let ran = match (minutes, price) {
                        (Some(m), Some(p)) => format!(" after {m} min ({})", p.cost(m)),
                        (Some(m), None) => format!(" after {m} min"),
                        _ => String::new(),
                    };
                    self.row(&i.id, "instance", format!("terminated{ran}"), true);
                }
            }
            Err(e) => {
                for id in &ids {
                    self.row(id, "instance", "could not terminate", false);
                }
                self.error.get_or_insert(Error::cloud(e));
            }
        }
    }

    /// Removes every runner that carries one of `labels`, or a label that starts with `prefix`.
    pub async fn remove_runners(
        &mut self,
        github: &Github,
        labels: &[String],
        prefix: Option<&str>,
    ) {
        let runners = match github.registry.runners().await {
            Ok(runners) => runners,
            Err(e) => {
                for label in labels {
                    self.row(label, "runner", "could not list", false);
                }
                self.error.get_or_insert(github.error(e));
                return;
            }
        };
        for label in labels {
            if !runners.iter().any(|r| r.labels.contains(label)) {
                self.row(label, "runner", "already removed", true);
            }
        }
        let chosen = runners.iter().filter(|r| {
            r.labels
                .iter()
                .any(|l| labels.contains(l) || prefix.is_some_and(|p| l.starts_with(p)))
        });
        for r in chosen {
            self.remove(github, r).await;
        }
    }

    async fn remove(&mut self, github: &Github, runner: &Runner) {
        let delete = || github.registry.delete_runner(runner.id);
        let removed = match delete().await {
            // GitHub answers 422 while it still sees the runner's job; once the instance is
            // gone, it fails that job within moments to minutes, so wait for it a while.
            Err(e) if e.runner_busy() && self.instances_ending => {
                tracing::info!(runner = %runner.name, "GitHub still shows a job on the runner; waiting");
                let busy = |e: &crate::github::GithubError| {
                    e.runner_busy().then_some(None).or_else(|| e.retryable())
                };
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
        match removed {
            Ok(Removal::Deleted) => self.row(&runner.name, "runner", "removed", true),
            Ok(Removal::AlreadyGone) => self.row(&runner.name, "runner", "already removed", true),
            Err(e) if e.runner_busy() => {
                self.row(&runner.name, "runner", "still running a job", false);
                self.error.get_or_insert(github.error(e));
            }
            Err(e) => {
                self.row(&runner.name, "runner", "could not remove", false);
                self.error.get_or_insert(github.error(e));
            }
        }
    }

    /// GitHub could not be reached at all: say which runners stay.
    pub fn github_unreachable(&mut self, labels: &[String], error: Error) {
        for label in labels {
            self.row(label, "runner", "could not reach GitHub", false);
        }
        self.error.get_or_insert(error);
    }

    /// What is left behind, for an error message: empty when everything is gone.
    pub fn left(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| !r.ok)
            .map(|r| format!("{} {} ({})", r.kind, r.what, r.done))
            .collect()
    }

    /// One sentence: what was removed.
    pub fn done(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.ok)
            .map(|r| format!("{} {} {}", r.kind, r.what, r.done))
            .collect()
    }

    /// Every row in the log and, under `heading`, as a table in the summary.
    pub fn report(&self, heading: &str, actions: &Actions) -> Result<(), Error> {
        for r in &self.rows {
            actions.info(&format!("{} {}: {}", r.kind, r.what, r.done));
        }
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| vec![r.what.clone(), r.kind.to_owned(), r.done.clone()])
            .collect();
        actions.append_summary(
            &Markdown::new()
                .heading(3, heading)
                .table(&["What", "Kind", "Done"], &rows)
                .build(),
        )?;
        Ok(())
    }

    /// The first error, if any.
    pub fn finish(self) -> Result<(), Error> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
