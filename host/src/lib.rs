//! model-pusher decides whether a newly trained model replaces the champion in an MLflow
//! registry, and then makes it so.
//!
//! The crate reads as the pipeline it runs:
//! - [`inputs`]: `params.yaml`, the evaluation step's `metrics.json` and the model directory;
//! - [`policy`]: the sandboxed WebAssembly runtime that asks a promotion policy for a decision;
//! - [`cases`]: the test cases `model-pusher policy test` runs a policy against;
//! - [`decision`]: the decision a policy returns, as JSON and as a table.

pub mod cases;
pub mod credentials;
pub mod decision;
pub mod inputs;
pub mod policy;
pub mod registry;
