//! What a teardown did, in the words users read: each machine's and runner's outcome, and what a
//! failed or cancelled start rolled back and left.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::machine::{Release, Released, ran_words};

/// What was done to one machine or runner.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The machine was let go as its lifecycle asks.
    Released(Released),
    /// Letting the machine go this way failed: it may still exist, and bill.
    NotReleased(Release),
    /// The machine was ending already.
    AlreadyEnded,
    /// Its provider took it back (a spot interruption), at the time its console gave, if any:
    /// the GPU job on it was interrupted, not failed.
    Reclaimed {
        at: Option<String>,
    },
    /// Another repository's machine (or one gpu-runner did not launch), named by id: untouched.
    LeftAlone {
        owner: Option<String>,
    },
    /// A JIT config its machine never read, deleted.
    HandoffDeleted,
    /// A JIT config its machine never read, which could not be deleted: it stays readable by
    /// whoever may read the parameter (the runner itself is removed all the same).
    HandoffNotDeleted,
    RunnerRemoved,
    RunnerAlreadyRemoved,
    /// GitHub would not remove it while it still shows a job on it.
    RunnerBusy,
    CouldNotListRunners,
    CouldNotRemoveRunner,
    GithubUnreachable,
}

impl Outcome {
    /// False when the thing may still exist (and bill, or take a job).
    pub fn ok(&self) -> bool {
        !matches!(
            self,
            Outcome::Released(Released::Failed)
                | Outcome::NotReleased(_)
                | Outcome::RunnerBusy
                | Outcome::CouldNotListRunners
                | Outcome::CouldNotRemoveRunner
                | Outcome::GithubUnreachable
                | Outcome::HandoffNotDeleted
        )
    }

    /// It was gone before this teardown looked.
    pub fn was_gone(&self) -> bool {
        matches!(
            self,
            Outcome::Released(Released::AlreadyGone)
                | Outcome::AlreadyEnded
                | Outcome::Reclaimed { .. }
                | Outcome::RunnerAlreadyRemoved
        )
    }
}

/// " after 3 min 5 s (≈ $x at …)", as much of it as is known.
fn ran_for(f: &mut fmt::Formatter<'_>, ran: Option<u64>, cost: Option<&str>) -> fmt::Result {
    match (ran, cost) {
        (Some(s), Some(cost)) => write!(f, " after {} ({cost})", ran_words(s)),
        (Some(s), None) => write!(f, " after {}", ran_words(s)),
        _ => Ok(()),
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Released(Released::Terminated { ran, cost }) => {
                f.write_str("terminated")?;
                ran_for(f, *ran, cost.as_deref())
            }
            Outcome::Released(Released::ReturnedToPool {
                ran,
                cost,
                still_stopping,
            }) => {
                f.write_str("returned to its pool")?;
                ran_for(f, *ran, cost.as_deref())?;
                if *still_stopping {
                    f.write_str(" (still stopping; its disk kept)")
                } else {
                    f.write_str(" (stopped, its disk kept)")
                }
            }
            Outcome::Released(Released::AlreadyInPool) => {
                f.write_str("already back in its pool (stopped, its disk kept)")
            }
            Outcome::Released(Released::Retired { why, ran, cost }) => {
                write!(f, "retired from its pool ({why}): terminated")?;
                ran_for(f, *ran, cost.as_deref())
            }
            Outcome::Released(Released::Deleted { ran }) => {
                f.write_str("deleted, with its secret")?;
                ran_for(f, *ran, None)
            }
            Outcome::Released(Released::Detached) => {
                f.write_str("detached (the machine is the user's, and stays)")
            }
            Outcome::Released(Released::AlreadyGone) => f.write_str("already gone"),
            Outcome::Released(Released::Failed) | Outcome::NotReleased(Release::Terminate) => {
                f.write_str("could not terminate")
            }
            Outcome::NotReleased(Release::ReturnToPool) => {
                f.write_str("could not return to its pool")
            }
            Outcome::NotReleased(Release::Detach) => f.write_str("could not detach"),
            Outcome::AlreadyEnded => f.write_str("already ended"),
            Outcome::Reclaimed { at } => {
                f.write_str("reclaimed by AWS (a spot interruption")?;
                if let Some(at) = at {
                    write!(f, " at {at}")?;
                }
                f.write_str(", after a two-minute notice): the GPU job was interrupted, not failed")
            }
            Outcome::LeftAlone { owner: Some(r) } => {
                write!(f, "left alone: it was launched for {r}")
            }
            Outcome::LeftAlone { owner: None } => {
                f.write_str("left alone: it carries no gpu-runner:repository tag")
            }
            Outcome::HandoffDeleted => {
                f.write_str("deleted (a JIT config its instance had not read)")
            }
            Outcome::HandoffNotDeleted => f.write_str("could not delete"),
            Outcome::RunnerRemoved => f.write_str("removed"),
            Outcome::RunnerAlreadyRemoved => f.write_str("already removed"),
            Outcome::RunnerBusy => f.write_str("still running a job"),
            Outcome::CouldNotListRunners => f.write_str("could not list"),
            Outcome::CouldNotRemoveRunner => f.write_str("could not remove"),
            Outcome::GithubUnreachable => f.write_str("could not reach GitHub"),
        }
    }
}

/// What a failed or cancelled start did about what it had created.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollback {
    /// What was removed (or found gone), one phrase each.
    pub removed: Vec<String>,
    pub left: Left,
    /// The start's label, for `mode: stop`.
    pub label: String,
    /// When the machines end themselves at the latest.
    pub ends_by: DateTime<Utc>,
}

/// What a rollback left behind.
#[derive(Debug, Clone, PartialEq)]
pub enum Left {
    /// Nothing: everything created is gone.
    Clear,
    /// These may still exist (and bill), and why.
    Remaining {
        what: Vec<String>,
        why: Option<String>,
    },
    /// The rollback could not look.
    Unknown { why: String },
    /// `keep-on-failure`: the machines stay for debugging; their runners were meant to go.
    Kept {
        ids: Vec<String>,
        runner_error: Option<String>,
    },
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ends_by = self
            .ends_by
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let label = &self.label;
        if let Left::Kept { ids, runner_error } = &self.left {
            write!(
                f,
                "Left behind: kept {} for debugging (keep-on-failure); it ends itself by \
                 {ends_by}, or run mode: stop with label {label}.",
                ids.join(", ")
            )?;
            if let Some(e) = runner_error {
                write!(
                    f,
                    " Its runner could not be removed ({e}): delete it under Settings → Actions \
                     → Runners."
                )?;
            }
            return Ok(());
        }
        if self.removed.is_empty() {
            f.write_str("Rolled back: nothing had been created.")?;
        } else {
            write!(f, "Rolled back: {}.", self.removed.join(", "))?;
        }
        let what = match &self.left {
            Left::Clear | Left::Kept { .. } => return Ok(()),
            Left::Remaining { what, why } => {
                let why = why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default();
                format!("Left behind: {}{why}", what.join(", "))
            }
            Left::Unknown { why } => format!("What is left could not be seen ({why})"),
        };
        write!(
            f,
            " {what}; the instance ends itself by {ends_by}, or run mode: stop with label \
             {label}, or remove the runner under Settings → Actions → Runners."
        )
    }
}
