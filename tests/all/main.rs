//! model-pusher's integration tests: one binary, a module per topic. They load real components
//! built from `policies/` and talk to real `mlflow server`s started by `support`.

// A test that cannot set up its fixture should fail loudly where it stands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cache;
mod cli;
mod concurrency;
mod faults;
mod kits;
mod kubeflow;
mod multi_metric;
mod push;
mod registry;
mod sandbox;
mod support;
mod threshold;
