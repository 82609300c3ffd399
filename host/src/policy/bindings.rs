//! Host bindings for each version of the policy contract in `wit/`.
//!
//! One `bindgen!` per contract version: when the contract changes, the new version gets its own
//! module here and older policies keep loading through theirs.

/// `model-pusher:policy@0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
    });
}
