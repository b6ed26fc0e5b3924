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
    #[error("the instance's boot script would not fit EC2's user data")]
    UserDataTooLarge(crate::boot::TooLarge),
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
