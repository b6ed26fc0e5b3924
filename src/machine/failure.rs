//! What the machine layer raises: a provider's call that failed, credentials it could not get,
//! and the refusals it judges itself (no capacity, no pool member, no way to GitHub, a boot script
//! too large, something this build cannot do). The modes turn it into the error users read.

use crate::machine::MachineError;
use crate::oidc::OidcError;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A call to the provider failed; its hint is worked out when it is shown.
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// The job's signed token tells of another run than the one the guard judged.
    #[error("{0}")]
    Untrusted(#[from] crate::guard::Untrusted),
    /// Something this build of gpu-runner cannot do.
    #[error("{what}")]
    Unsupported { what: String, fix: String },
    /// What the machine layer judged it could not do.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// What the machine layer refuses on its own judgement, with the words users read for it.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Every capacity candidate was refused.
    #[error("no candidate had capacity")]
    NoCapacity { tried: Vec<Refusal> },
    /// The network would keep the runner from GitHub (found by dry-run): what, and the fix.
    #[error("{what}")]
    Network { what: String, fix: String },
    /// The pool had no instance to give: all busy and the pool full, or the one named is not a
    /// member.
    #[error("{what}")]
    Pool { what: String, fix: String },
    /// The boot script, with the runner's configuration, would not fit EC2's user data.
    #[error(
        "the instance's boot script would be {} bytes gzip-compressed, and EC2 takes at most {} \
         bytes of user data",
        .0.size,
        crate::boot::USER_DATA_LIMIT
    )]
    UserDataTooLarge(crate::boot::TooLarge),
}

/// An annotation's parts: its title, what happened, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words {
    pub title: &'static str,
    pub what: String,
    pub fix: String,
}

impl Refused {
    pub fn words(&self) -> Words {
        match self {
            Refused::NoCapacity { tried } => {
                let rows: Vec<String> = tried
                    .iter()
                    .map(|r| format!("- {} → {} → {}", r.candidate, r.code, r.advice))
                    .collect();
                let quotas: Vec<&crate::machine::ec2::quotas::Shortfall> =
                    tried.iter().filter_map(|r| r.quota.as_ref()).collect();
                if !tried.is_empty() && quotas.len() == tried.len() {
                    return Words {
                        title: "vCPU quota too low",
                        what: format!(
                            "AWS's vCPU quota refused every candidate, in this order:\n{}",
                            rows.join("\n")
                        ),
                        fix: crate::machine::ec2::quotas::fix(&quotas),
                    };
                }
                Words {
                    title: "No GPU capacity",
                    what: format!(
                        "AWS refused every candidate, in this order:\n{}",
                        rows.join("\n")
                    ),
                    fix: "Capacity comes and goes: re-run the job, or widen the search with more \
                          instance-types and subnet-ids entries (other zones), or market-type: \
                          spot-then-on-demand."
                        .to_owned(),
                }
            }
            Refused::Pool { what, fix } => Words {
                title: "No pool instance",
                what: what.clone(),
                fix: fix.clone(),
            },
            Refused::Network { what, fix } => Words {
                title: "The runner could not reach GitHub",
                what: what.clone(),
                fix: fix.clone(),
            },
            Refused::UserDataTooLarge(t) => Words {
                title: "Boot script too large for EC2",
                what: format!(
                    "{self}: pre-runner-script makes up {} bytes of it compressed, the runner's \
                     just-in-time configuration {} and gpu-runner's own script the other {}",
                    t.pre_runner_script,
                    t.jit_config,
                    t.size.saturating_sub(t.pre_runner_script + t.jit_config)
                ),
                fix: format!(
                    "Shorten pre-runner-script by at least {} compressed bytes: install what it \
                     sets up in your own image (image-id), or have it download a script you keep \
                     elsewhere and check that script's SHA-256 before running it.",
                    t.size.saturating_sub(crate::boot::USER_DATA_LIMIT)
                ),
            },
        }
    }
}

/// A capacity candidate AWS refused, and what its error code means.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub candidate: String,
    pub code: String,
    pub advice: String,
    /// The vCPU quota that refused it, when one did.
    pub quota: Option<crate::machine::ec2::quotas::Shortfall>,
}
