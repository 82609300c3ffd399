pub mod fixture;
pub mod mlflow;
pub mod policies;
pub mod proxy;

/// Runs a registry call from a synchronous test, on a runtime of its own.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the test")
        .block_on(future)
}
