"""Writes what the pipeline's training and evaluation steps hand to the push step, so that
model-pusher can be run, demonstrated and tested without the pipeline.

usage: make_fixture.py OUT --accuracy A [--seed N] [--nan]

OUT/model/model.pkl       a small spam detector (TF-IDF + logistic regression in a scikit-learn
                          Pipeline), trained on a few built-in sentences and saved with `pickle`
                          as the original training step saves it
OUT/metrics/metrics.json  accuracy (exactly A), precision, recall and auc, written by
                          `json.dump`; with --nan, auc is NaN (a bare `NaN` token, as Python
                          writes it, which strict JSON parsers reject)
OUT/params.yaml           the original component's model_comparison settings

The same seed gives the same files. Run it with the project's virtualenv, which has
scikit-learn: .venv/bin/python scripts/make_fixture.py OUT --accuracy 0.9
"""

import argparse
import json
import math
import pickle
import random
import sys
from pathlib import Path

PARAMS_YAML = """\
model_comparison:
  improvement_threshold: 0.05
  primary_metric: "accuracy"
  comparison_metrics:
    - "precision"
    - "recall"
    - "f1_score"
"""

SPAM = [
    "congratulations you have won a free cruise call now to claim",
    "urgent your account has been selected for a cash reward",
    "win a brand new phone text WIN to 80082 today",
    "limited offer cheap loans approved instantly no credit check",
    "you are a winner claim your 1000 pound prize now",
    "free entry into our weekly draw reply YES to join",
    "exclusive deal lose weight fast with this one simple pill",
    "your mobile number has won a bonus voucher call to collect",
    "act now to get 90 percent off designer watches",
    "final notice you have an unclaimed lottery payout waiting",
    "click this link to verify your bank details and get a refund",
    "hot singles in your area are waiting text now",
]

HAM = [
    "are we still meeting for lunch tomorrow at noon",
    "can you send me the notes from today's lecture",
    "i will be home late, don't wait for dinner",
    "happy birthday, hope you have a great day",
    "the train is delayed again, running ten minutes late",
    "did you see the match last night, what a goal",
    "mum says thanks for the flowers",
    "let's review the report on monday morning",
    "could you pick up some milk on the way back",
    "see you at the gym after work",
    "the meeting moved to room 4 on the second floor",
    "thanks for your help with the move yesterday",
]


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Write a model, its metrics and params.yaml as the pipeline hands them "
        "to the push step."
    )
    parser.add_argument("out", type=Path, help="directory to write (created if missing)")
    parser.add_argument(
        "--accuracy", type=float, required=True, help="the accuracy to report, e.g. 0.9"
    )
    parser.add_argument("--seed", type=int, default=0, help="varies the model and the metrics")
    parser.add_argument("--nan", action="store_true", help="write NaN for auc")
    args = parser.parse_args(argv)
    if not 0.0 <= args.accuracy <= 1.0:
        parser.error(f"--accuracy {args.accuracy} is not between 0 and 1")
    return args


def train(seed):
    # Imported here so that a wrong interpreter fails with a message, not a traceback.
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
    except ImportError:
        sys.exit(
            "make_fixture.py: scikit-learn is missing; run scripts/setup.sh and use "
            ".venv/bin/python"
        )

    examples = [(text, 1) for text in SPAM] + [(text, 0) for text in HAM]
    random.Random(seed).shuffle(examples)
    texts = [text for text, _ in examples]
    labels = [label for _, label in examples]
    model = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("classifier", LogisticRegression(C=10.0, random_state=seed, max_iter=1000)),
        ]
    )
    model.fit(texts, labels)
    # The vectorizer caches the id() of its stop-word list, a memory address that changes from
    # run to run; without it the pickle is the same bytes for the same seed. The cache is only
    # an optimisation: scikit-learn recomputes it when it is missing.
    vectorizer = model.named_steps["tfidf"]
    if hasattr(vectorizer, "_stop_words_id"):
        del vectorizer._stop_words_id
    return model


def metrics_for(accuracy, seed, nan_auc):
    # Precision and recall straddle the accuracy by a seed-dependent margin; auc sits above it.
    rng = random.Random(seed)

    def near(value):
        return round(min(max(value, 0.0), 1.0), 4)

    spread = rng.uniform(0.005, 0.03)
    return {
        "accuracy": accuracy,
        "precision": near(accuracy + spread),
        "recall": near(accuracy - spread),
        "auc": math.nan if nan_auc else near(accuracy + (1.0 - accuracy) * rng.uniform(0.3, 0.6)),
    }


def main(argv):
    args = parse_args(argv)
    model = train(args.seed)

    (args.out / "model").mkdir(parents=True, exist_ok=True)
    with open(args.out / "model" / "model.pkl", "wb") as file:
        pickle.dump(model, file)

    (args.out / "metrics").mkdir(parents=True, exist_ok=True)
    metrics = metrics_for(args.accuracy, args.seed, args.nan)
    with open(args.out / "metrics" / "metrics.json", "w") as file:
        json.dump(metrics, file)

    (args.out / "params.yaml").write_text(PARAMS_YAML)
    print(f"make_fixture.py: wrote {args.out} ({json.dumps(metrics)})")


if __name__ == "__main__":
    main(sys.argv[1:])
