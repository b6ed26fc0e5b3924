//! The error `main` sees, with the modes that raise most of it, and how each error becomes an
//! annotation the user reads (the machine layer's `Failure` converts into it):
//! `::error title=<what failed>::<what happened>. <how to fix it>`.

use crate::actions::{Annotation, ProtocolError};
use crate::context::ContextError;
use crate::github::{GithubError, Whose};
use crate::inputs::InputErrors;
use crate::machine::MachineError;
use crate::modes::start::wait::Stalled;
use crate::modes::teardown::Rollback;
use crate::oidc::OidcError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Inputs(#[from] InputErrors),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Something this build of gpu-runner cannot do.
    #[error("{what}")]
    Unsupported { what: String, fix: String },
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// A call to the machine provider failed; its hint is worked out when it is shown.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// A GitHub call failed; its hint is worked out when it is shown.
    #[error("{source}")]
    Github {
        source: GithubError,
        whose: Box<Whose>,
    },
    /// The machine was acquired but its runner did not come online.
    #[error("{stalled}")]
    Startup {
        stalled: Stalled,
        /// The last lines the machine printed (its boot phases).
        console: Vec<String>,
    },
    /// A failure after launch, and what was done about what had been launched.
    #[error("{cause} {rollback}")]
    AfterLaunch {
        cause: Box<Error>,
        rollback: Box<Rollback>,
    },
    /// The run's code may come from a stranger: start refused before any credential was asked for.
    #[error("{0}")]
    Untrusted(#[from] crate::guard::Untrusted),
    /// What the machine layer judged it could not do (no capacity, no pool member, no way to
    /// GitHub, a boot script too large); its words come with it.
    #[error(transparent)]
    Refused(#[from] crate::machine::failure::Refused),
    /// `gpu-runner attach` could not go on: what, and how to fix it.
    #[error("{what}")]
    Attach {
        title: &'static str,
        what: String,
        fix: String,
    },
    /// The workflow was cancelled while this step ran.
    #[error("cancelled ({signal}) {stage}. {}", rolled_back(rollback.as_deref()))]
    Cancelled {
        signal: &'static str,
        stage: &'static str,
        /// `None` when nothing had been created yet.
        rollback: Option<Box<Rollback>>,
    },
}

pub use crate::machine::failure::Refusal;

fn rolled_back(rollback: Option<&Rollback>) -> String {
    match rollback {
        Some(r) => r.to_string(),
        None => "Nothing was registered or launched.".to_owned(),
    }
}

impl From<crate::machine::failure::Failure> for Error {
    fn from(f: crate::machine::failure::Failure) -> Self {
        use crate::machine::failure::Failure;
        match f {
            Failure::Machine(e) => Error::Machine(e),
            Failure::Oidc(e) => Error::Oidc(e),
            Failure::Untrusted(why) => Error::Untrusted(why),
            Failure::Unsupported { what, fix } => Error::Unsupported { what, fix },
            Failure::Refused(r) => Error::Refused(r),
        }
    }
}

/// The page of docs/troubleshooting.md for an annotation title, as a full URL of this major
/// version's docs (a step's log is read on github.com, far from any checkout).
pub fn help_url(anchor: &str) -> String {
    format!(
        "{}/blob/v{}/docs/troubleshooting.md#{anchor}",
        env!("CARGO_PKG_REPOSITORY"),
        env!("CARGO_PKG_VERSION_MAJOR")
    )
}

/// The anchor GitHub gives a Markdown heading with this text.
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

impl Error {
    /// One annotation per problem, each ending with where docs/troubleshooting.md says more about
    /// it: every input error is shown, so that all are fixed in one round.
    pub fn annotations(&self) -> Vec<Annotation> {
        self.bare_annotations()
            .into_iter()
            .map(|mut a| {
                let title = a.title.clone().unwrap_or_default();
                a.message = format!(
                    "{}\nTroubleshooting: {}",
                    a.message,
                    help_url(&self.help_anchor(&title))
                );
                a
            })
            .collect()
    }

    /// The troubleshooting section for an annotation of this error titled `title`: one per title,
    /// and one per family of titles that name an input or a call.
    fn help_anchor(&self, title: &str) -> String {
        match self {
            Error::Inputs(_) if title.starts_with("Missing input") => "missing-input".to_owned(),
            Error::Inputs(_) => "invalid-input".to_owned(),
            Error::Machine(_) => "a-cloud-or-cluster-call-failed".to_owned(),
            Error::Github { .. } => "github-a-call-failed".to_owned(),
            Error::AfterLaunch { cause, .. } => cause.help_anchor(title),
            _ => anchor(title),
        }
    }

    /// The annotations without their troubleshooting link, for a caller that adds its own words.
    pub fn bare_annotations(&self) -> Vec<Annotation> {
        let one = |title: &str, what: String, fix: String| {
            vec![Annotation::error(format!("{}. {fix}", what.trim_end_matches('.'))).title(title)]
        };
        match self {
            Error::Inputs(errors) => errors
                .0
                .iter()
                .map(|e| Annotation::error(e.to_string()).title(e.title()))
                .collect(),
            Error::Context(e) => one("Not in a GitHub Actions job", e.to_string(), e.hint()),
            Error::Protocol(e) => one("Could not talk to the runner", e.to_string(), e.hint()),
            Error::Unsupported { what, fix } => one("Not supported", what.clone(), fix.clone()),
            Error::Oidc(e) => one("No AWS credentials", e.to_string(), e.hint()),
            Error::Machine(e) => one(
                &format!("{} {} failed", e.provider.service(), e.operation),
                e.to_string(),
                e.hint(),
            ),
            Error::Github { source, whose } => one(
                &format!("GitHub: {} failed", source.operation),
                source.to_string(),
                whose.hint(source),
            ),
            Error::Startup { stalled, console } if !console.is_empty() => {
                // The fix reads the last words, so it comes after them, on a line of its own.
                vec![
                    Annotation::error(format!(
                        "{stalled}. The {}'s last words:\n{}\n{}",
                        stalled.noun(),
                        console.join("\n"),
                        stalled.fix()
                    ))
                    .title("The GPU runner did not come online"),
                ]
            }
            Error::Startup { stalled, .. } => one(
                "The GPU runner did not come online",
                stalled.to_string(),
                stalled.fix().to_owned(),
            ),
            Error::Untrusted(why) => one(
                "Untrusted trigger: no GPU runner started",
                format!(
                    "gpu-runner refused to start because {why}; a self-hosted runner runs that \
                     code with access to the instance and its network"
                ),
                crate::guard::FIX.to_owned(),
            ),
            Error::Refused(r) => {
                let words = r.words();
                one(words.title, words.what, words.fix)
            }
            Error::Attach { title, what, fix } => one(title, what.clone(), fix.clone()),
            Error::Cancelled {
                signal,
                stage,
                rollback,
            } => one(
                "gpu-runner was cancelled",
                format!(
                    "The job was cancelled ({signal}) {stage}. {}",
                    rolled_back(rollback.as_deref())
                ),
                "Nothing to fix: re-run the workflow when you want the GPU job.".to_owned(),
            ),
            Error::AfterLaunch { cause, rollback } => cause
                .bare_annotations()
                .into_iter()
                .map(|mut a| {
                    a.message = format!("{} {rollback}", a.message);
                    a
                })
                .collect(),
        }
    }
}

/// The annotation for a panic: a bug, said plainly, with where to report it. The panic's own
/// message is redacted by the caller, so that no secret reaches the log through it.
pub fn bug_report(location: Option<String>, message: &str) -> Annotation {
    let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
    Annotation::error(format!(
        "gpu-runner stopped on an internal error{at}: {message}. This is a bug in gpu-runner, not \
         in your workflow: please report it at {}/issues with this log (secrets in it are masked). \
         If a GPU instance was launched, the stop job or the next cleanup run removes it.",
        env!("CARGO_PKG_REPOSITORY"),
    ))
    .title("gpu-runner bug")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::{InputError, Problem, Shown};

    #[test]
    fn every_input_error_becomes_its_own_annotation() {
        let err = Error::from(InputErrors(vec![
            InputError {
                input: "dry-run",
                value: Shown::Value("yes".into()),
                problem: Problem::NotBoolean,
            },
            InputError {
                input: "mode",
                value: Shown::Unset,
                problem: Problem::Missing {
                    fix: "Set mode: start.".into(),
                },
            },
        ]));
        let commands: Vec<_> = err.annotations().iter().map(|a| a.to_command()).collect();
        assert_eq!(
            commands,
            [
                "::error title=Invalid input%3A dry-run::dry-run is \"yes\", which is not a boolean. Use true or false (True, TRUE, False and FALSE work too).%0ATroubleshooting: https://github.com/gpu-runner/gpu-runner/blob/v1/docs/troubleshooting.md#invalid-input",
                "::error title=Missing input%3A mode::mode is not set. Set mode: start.%0ATroubleshooting: https://github.com/gpu-runner/gpu-runner/blob/v1/docs/troubleshooting.md#missing-input",
            ]
        );
    }

    #[test]
    fn a_bug_report_says_where_to_report_it() {
        let a = bug_report(Some("src/plan.rs:10:5".into()), "index out of bounds");
        let text = a.to_command();
        assert!(text.starts_with("::error title=gpu-runner bug::gpu-runner stopped on an internal error at src/plan.rs:10:5: index out of bounds. This is a bug"));
        assert!(text.contains("https://github.com/gpu-runner/gpu-runner/issues"));
    }
}
