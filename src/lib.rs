//! gpu-runner: a GitHub Action that gives one workflow job an ephemeral GPU machine.
//!
//! Data flows one way: `inputs` (typed `INPUT_*`) → `plan` (pure) → cloud and GitHub calls behind
//! the `cloud` and `github` traits → outputs through `actions`, the runner protocol.

pub mod actions;
pub mod boot;
pub mod clock;
pub mod cloud;
pub mod context;
pub mod env;
pub mod error;
pub mod github;
pub mod guard;
pub mod inputs;
pub mod logging;
pub mod modes;
pub mod oidc;
pub mod plan;
pub mod pricing;
pub mod retry;
pub mod secret;
