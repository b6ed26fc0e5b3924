//! gpu-runner's integration tests, one binary for every area so that the AWS SDK and the world
//! are linked once. Each test runs the real binary with `INPUT_*` variables, most of them
//! against the local world (`tests/world`); `support` builds those steps.

mod support;

mod attach;
mod capacity;
mod cleanup;
mod contract;
mod cycle;
mod faults;
mod kubernetes;
mod pools;
mod security;
mod spot;
mod steps;
mod stories;
mod world_ec2;
mod world_k8s;
