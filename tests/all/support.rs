pub mod mlflow;
