pub mod fixture;
pub mod mlflow;
pub mod policies;
pub mod proxy;
