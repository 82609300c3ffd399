//! model-pusher decides whether a newly trained model replaces the champion in an MLflow
//! registry, and then makes it so.
//!
//! The crate reads as the pipeline it runs:
//! - [`inputs`]: `params.yaml`, the evaluation step's `metrics.json` and the model directory;
//! - [`credentials`]: which tracking server, and how to authenticate to it;
//! - [`registry`]: the MLflow REST client;
//! - [`policy`]: the sandboxed WebAssembly runtime that asks a promotion policy for a decision;
//! - [`decision`]: the decision a policy returns, as JSON and as a table;
//! - [`push`]: the orchestration: champion, decision, run, registration, verdict;
//! - [`mlmodel`]: the `MLmodel` file that makes the logged model loadable by MLflow;
//! - [`cases`]: the test cases `model-pusher policy test` runs a policy against;
//! - [`scaffold`]: the policy crate `model-pusher policy new` makes for a team.

pub mod cases;
pub mod credentials;
pub mod decision;
pub mod inputs;
pub mod mlmodel;
pub mod policy;
pub mod push;
pub mod registry;
pub mod scaffold;
