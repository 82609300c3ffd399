"""Checks that a model version model-pusher registered is usable from Python the way a serving
step would use it: `mlflow.pyfunc.load_model("models:/NAME/VERSION")`, then `predict` on a
pandas Series of texts. model-pusher logs the model through the REST API and writes its MLmodel
file itself, so this is the proof that the file says enough for MLflow to load the model.

usage: check_pyfunc.py NAME VERSION [--no-warnings]
VERSION is a version number, a stage (Production) or an alias written @champion.

The tracking server is $MLFLOW_TRACKING_URI. Prints the two predictions; exits 1 when the model
does not load or does not predict one label per text, and, with --no-warnings, when MLflow warned
while loading (e.g. about a missing Python version or mismatched requirements).
Run it with an interpreter that has mlflow and scikit-learn, e.g. .venv/bin/python.
"""

import argparse
import logging
import os
import sys
import warnings

TEXTS = [
    "congratulations you won a free prize, call now to claim your cash",
    "are we still meeting for lunch tomorrow at noon",
]


class Recorder(logging.Handler):
    """Keeps the warnings MLflow logs, which it does through `logging`, not `warnings`."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(f"{record.name}: {record.getMessage()}")


def fail(message):
    print(f"check_pyfunc.py: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    parser = argparse.ArgumentParser(
        description="Load models:/NAME/VERSION with mlflow.pyfunc and predict."
    )
    parser.add_argument("name", help="registered model name")
    parser.add_argument("version", help="version number, stage, or @alias")
    parser.add_argument(
        "--no-warnings", action="store_true", help="fail when MLflow warns while loading"
    )
    args = parser.parse_args(argv)

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        fail("set MLFLOW_TRACKING_URI to the tracking server, e.g. http://127.0.0.1:5000")
    try:
        import mlflow.pyfunc
        import pandas
    except ImportError as error:
        fail(f"{error}; run scripts/setup.sh and use .venv/bin/python")

    recorder = Recorder()
    logging.getLogger("mlflow").addHandler(recorder)
    if args.version.startswith("@"):
        uri = f"models:/{args.name}{args.version}"
    else:
        uri = f"models:/{args.name}/{args.version}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = mlflow.pyfunc.load_model(uri)
        except Exception as error:
            fail(f"cannot load {uri}: {type(error).__name__}: {error}")
    # MLflow has already printed what it logged; its Python warnings were caught, so print them.
    # Warnings from other libraries (deprecations and the like) are not the MLmodel's fault.
    messages = list(recorder.messages)
    for caught_warning in caught:
        if "mlflow" in caught_warning.filename:
            message = f"{caught_warning.category.__name__}: {caught_warning.message}"
            print(f"check_pyfunc.py: {message}", file=sys.stderr)
            messages.append(message)

    try:
        predictions = model.predict(pandas.Series(TEXTS))
    except Exception as error:
        fail(f"{uri} loaded but predict failed: {type(error).__name__}: {error}")
    labels = list(getattr(predictions, "tolist", lambda: predictions)())
    if len(labels) != len(TEXTS):
        fail(f"{uri} predicted {len(labels)} labels for {len(TEXTS)} texts: {labels}")

    for text, label in zip(TEXTS, labels):
        print(f"{label}\t{text}")
    if args.no_warnings and messages:
        listed = "".join(f"\n  {message}" for message in messages)
        fail(f"{uri} loaded, but MLflow warned:{listed}")


if __name__ == "__main__":
    main(sys.argv[1:])
