"""model-pusher as a Kubeflow Pipelines (v2) step, and the seed's pipeline rewired to use it.

`push_model` is the component of component.yaml written with `dsl.container_component`; the
two must stay the same component (test_pipeline.py checks that they compile alike).

`spam_detection_pipeline` is the seed's train -> evaluate -> push pipeline. `train` and
`evaluate` here are stand-ins that write what the seed's steps write (`model.pkl`,
`metrics.json`); use your own. What changed from the seed's push step:

- the DagsHub token and user are no longer pipeline parameters (the spec and the UI would show
  them): they come from the Kubernetes secret `dagshub-credentials` (keys `token` and
  `username`) as environment variables, via kfp-kubernetes. Create it with
      kubectl create secret generic dagshub-credentials \
          --from-literal=username=USER --from-file=token=TOKEN_FILE
  `spam_detection_pipeline_token_file` mounts the same secret as files instead and names the
  token file with `--dagshub-token-file`, so that the token is in no environment variable;
- params.yaml comes from the ConfigMap `model-pusher-params`, mounted at /etc/model-pusher
  (kubectl create configmap model-pusher-params --from-file=params.yaml), since the
  model-pusher image holds no project files;
- the push reports its verdict (output parameter `verdict`), the decision JSON (artifact
  `decision`) and a Markdown table of the checks (artifact `comparison`, which the UI renders).

Compile with:  python kubeflow/pipeline.py OUT.yaml [--token-file]
The image is $MODEL_PUSHER_IMAGE, else the placeholder model-pusher:latest.
"""

import os
import sys
from typing import Optional

from kfp import compiler, dsl, kubernetes
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output, OutputPath

IMAGE = os.environ.get("MODEL_PUSHER_IMAGE", "model-pusher:latest")
BINARY = "/usr/local/bin/model-pusher"

DAGSHUB_SECRET = "dagshub-credentials"
# Secret key -> environment variable, for the environment route.
DAGSHUB_SECRET_ENV = {
    "token": "DAGSHUB_USER_TOKEN",
    "username": "MLFLOW_TRACKING_USERNAME",
}
# Where the volume route mounts the secret; each key becomes a file.
DAGSHUB_SECRET_DIR = "/var/run/secrets/dagshub"

PARAMS_CONFIG_MAP = "model-pusher-params"
PARAMS_DIR = "/etc/model-pusher"


@dsl.container_component
def push_model(
    model: Input[Model],
    metrics: Input[Metrics],
    repo_owner_name: str,
    repo_name: str,
    model_name: str,
    param_path: str,
    verdict: OutputPath(str),
    decision: Output[Artifact],
    comparison: Output[Markdown],
    stage: str = "Production",
    dagshub_token_file: Optional[str] = None,
):
    """Decides with a WebAssembly promotion policy whether the newly trained model replaces the
    champion in the MLflow registry, registers it, and promotes, holds or rejects it."""
    return dsl.ContainerSpec(
        image=IMAGE,
        command=[BINARY, "push"],
        args=[
            "--repo-owner-name", repo_owner_name,
            "--repo-name", repo_name,
            "--model-name", model_name,
            "--stage", stage,
            "--param-path", param_path,
            "--model-path", model.path,
            "--metrics-path", metrics.path,
            # Recorded as a tag on the MLflow run, to find the pipeline run from the model.
            "--pipeline-run-id", dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            "--decision-out", decision.path,
            "--verdict-out", verdict,
            "--markdown-out", comparison.path,
            # Kubeflow keeps the pod's stderr; a log file would vanish with the pod.
            "--no-log-file",
            dsl.IfPresentPlaceholder(
                input_name="dagshub_token_file",
                then=["--dagshub-token-file", dagshub_token_file],
            ),
        ],
    )


@dsl.component(base_image="python:3.11-slim")
def train(model: Output[Model]):
    """Stand-in for the seed's training step: a directory holding model.pkl."""
    import os
    import pickle

    os.makedirs(model.path, exist_ok=True)
    with open(os.path.join(model.path, "model.pkl"), "wb") as out:
        pickle.dump({"stand_in": "the seed's trained classifier"}, out)


@dsl.component(base_image="python:3.11-slim")
def evaluate(model: Input[Model], metrics: Output[Metrics]):
    """Stand-in for the seed's evaluation step: a directory holding metrics.json."""
    import json
    import os

    os.makedirs(metrics.path, exist_ok=True)
    scores = {"accuracy": 0.93, "precision": 0.91, "recall": 0.89, "f1_score": 0.90}
    with open(os.path.join(metrics.path, "metrics.json"), "w") as out:
        json.dump(scores, out)


def _train_evaluate_push(
    repo_owner_name: str,
    repo_name: str,
    model_name: str,
    stage: str,
    param_file_path: str,
    dagshub_token_file: Optional[str] = None,
) -> dsl.PipelineTask:
    train_op = train()
    evaluate_op = evaluate(model=train_op.outputs["model"])
    extra = {} if dagshub_token_file is None else {"dagshub_token_file": dagshub_token_file}
    push_op = push_model(
        model=train_op.outputs["model"],
        metrics=evaluate_op.outputs["metrics"],
        repo_owner_name=repo_owner_name,
        repo_name=repo_name,
        model_name=model_name,
        stage=stage,
        param_path=param_file_path,
        **extra,
    )
    push_op.set_display_name("push")
    # The push reads and writes the registry: a cached result would skip it and report a
    # decision made against an older champion.
    push_op.set_caching_options(False)
    kubernetes.use_config_map_as_volume(
        push_op, config_map_name=PARAMS_CONFIG_MAP, mount_path=PARAMS_DIR
    )
    return push_op


@dsl.pipeline(
    name="spam-detection",
    description="Trains and evaluates the spam model, then model-pusher decides on it.",
)
def spam_detection_pipeline(
    repo_owner_name: str,
    repo_name: str,
    model_name: str = "spam_detection_model",
    stage: str = "Production",
    param_file_path: str = f"{PARAMS_DIR}/params.yaml",
):
    push_op = _train_evaluate_push(
        repo_owner_name, repo_name, model_name, stage, param_file_path
    )
    kubernetes.use_secret_as_env(
        push_op, secret_name=DAGSHUB_SECRET, secret_key_to_env=DAGSHUB_SECRET_ENV
    )


@dsl.pipeline(
    name="spam-detection-token-file",
    description="As spam-detection, with the DagsHub token mounted as a file.",
)
def spam_detection_pipeline_token_file(
    repo_owner_name: str,
    repo_name: str,
    model_name: str = "spam_detection_model",
    stage: str = "Production",
    param_file_path: str = f"{PARAMS_DIR}/params.yaml",
):
    push_op = _train_evaluate_push(
        repo_owner_name,
        repo_name,
        model_name,
        stage,
        param_file_path,
        dagshub_token_file=f"{DAGSHUB_SECRET_DIR}/token",
    )
    # Without a user name the token goes out as a bearer token, which DagsHub accepts.
    kubernetes.use_secret_as_volume(
        push_op, secret_name=DAGSHUB_SECRET, mount_path=DAGSHUB_SECRET_DIR
    )


def main(argv: list) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "--token-file"):
        print(f"usage: {argv[0]} OUT.yaml [--token-file]", file=sys.stderr)
        return 2
    pipeline = (
        spam_detection_pipeline_token_file if len(argv) == 3 else spam_detection_pipeline
    )
    compiler.Compiler().compile(pipeline, argv[1])
    print(f"compiled {pipeline.name} to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
