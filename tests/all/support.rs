pub mod mlflow;
pub mod policies;
