//! gpu-runner: a GitHub Action that gives one workflow job an ephemeral GPU machine.
//!
//! Data flows one way: `inputs` (typed `INPUT_*`) → `plan` (pure) → machine and GitHub calls
//! behind the `machine::Provider` and `github::RunnerRegistry` traits → outputs through
//! `actions`, the runner protocol.

pub mod actions;
pub mod attach;
pub mod boot;
pub mod clock;
pub mod context;
pub mod env;
pub mod github;
pub mod guard;
pub mod inputs;
pub mod logging;
pub mod machine;
pub mod modes;
pub mod oidc;
pub mod plan;
pub mod retry;
pub mod runner_package;
pub mod secret;
