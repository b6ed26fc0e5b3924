//! The step builder from the world crate, bound to this package's binary.

#![allow(dead_code, unused_imports)] // each test binary uses a different part

pub use world::step::{Outcome, TOKEN};

pub struct Step;

impl Step {
    pub fn mode(mode: &str) -> world::step::Step {
        world::step::Step::mode(env!("CARGO_BIN_EXE_gpu-runner"), mode)
    }

    pub fn start() -> world::step::Step {
        world::step::Step::start(env!("CARGO_BIN_EXE_gpu-runner"))
    }

    pub fn stop() -> world::step::Step {
        world::step::Step::stop(env!("CARGO_BIN_EXE_gpu-runner"))
    }
}
