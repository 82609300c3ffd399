"""Large model: a 1 GiB model pushed with model-pusher, against curl uploading the same file to
the same artifact endpoint, side by side in one run.

Why: model-pusher streams model files from disk to MLflow's artifact proxy; its memory must not
grow with the model (budget: peak RSS under 64 MiB) and its upload should go about as fast as a
plain HTTP client's (budget: at least 80% of curl's throughput).

What it does: checks the free disk space (`df`: the model, and the server's copy of it), writes
a model directory holding a `model.pkl` of 1 GiB of random bytes (or a sparse file with
--sparse) beside a metrics.json and a params.yaml whose primary metric is in it, starts a local
MLflow 3.17.2 server, and then, N times, alternating:
  model-pusher  `push -v` of that directory to a fresh model name (a promote: a dozen or so
                requests besides the upload); peak RSS from /usr/bin/time; throughput as
                bytes / the time between "uploading ... model/model.pkl" and the server's
                answer to that PUT in the -v log (the budget's figure), and, more harshly, as
                bytes / the wall time of the whole push, nothing subtracted;
  curl          `curl -T model.pkl` (a streamed PUT, as curl sends it by default) to
                /api/2.0/mlflow-artifacts/artifacts/<exp_id>/<run_id>/artifacts/model/big.bin of a
                run created for it; throughput = bytes / wall time of the curl process.
The server's copy is deleted after each upload, everything else at the end.

usage: .venv/bin/python bench/large_model.py [--runs N] [--size-mib 1024] [--sparse] [--dir D]
                                             [--json OUT]
"""

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as b  # noqa: E402

MIB = 1024 * 1024
PARAMS_YAML = """\
model_comparison:
  improvement_threshold: 0.05
  primary_metric: "accuracy"
"""
RSS_BUDGET_MIB = 64
THROUGHPUT_BUDGET = 0.80


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="uploads per client (5)")
    parser.add_argument("--size-mib", type=int, default=1024, help="model size in MiB (1024)")
    parser.add_argument("--sparse", action="store_true",
                        help="write a sparse file (zeros) instead of random bytes")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary model and server state go (default: $TMPDIR)")
    parser.add_argument("--json", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args()
    if args.runs < 1 or args.size_mib < 1:
        parser.error("--runs and --size-mib must be at least 1")
    return args


def write_model(directory, size, sparse):
    (directory / "model").mkdir(parents=True)
    (directory / "metrics").mkdir()
    (directory / "metrics" / "metrics.json").write_text(
        json.dumps({"accuracy": 0.9, "precision": 0.91, "recall": 0.89})
    )
    (directory / "params.yaml").write_text(PARAMS_YAML)
    model = directory / "model" / "model.pkl"
    with open(model, "wb") as file:
        if sparse:
            file.truncate(size)
        else:
            for _ in range(size // MIB):
                file.write(os.urandom(MIB))
            file.write(os.urandom(size % MIB))
    return model


TIMESTAMP = re.compile(r"^(\S+Z)\s")


def _time(line):
    match = TIMESTAMP.match(line)
    if not match:
        return None
    # 2026-12-03T19:02:55.480482Z; fromisoformat takes at most 6 fraction digits.
    stamp = match.group(1).rstrip("Z")
    head, _, fraction = stamp.partition(".")
    return datetime.fromisoformat(f"{head}.{fraction[:6].ljust(6, '0')}").timestamp()


def upload_seconds(log):
    """From `push -v`: the time from "uploading ... model/model.pkl" to the answer to its PUT."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "uploading" in line and "model/model.pkl" in line:
            start = _time(line)
            for later in lines[i + 1:]:
                if "PUT" in later and "answered" in later:
                    end = _time(later)
                    if start is not None and end is not None:
                        return end - start
            return None
    return None


def empty_dir(directory):
    for entry in directory.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def main():
    args = parse_args()
    b.require_pusher()
    b.require_venv()
    size = args.size_mib * MIB
    args.dir.mkdir(parents=True, exist_ok=True)
    # The model, one server copy at a time, and room to spare.
    needed = (1 if args.sparse else 2) * size + size + 512 * MIB
    free = shutil.disk_usage(args.dir).free
    if free < needed:
        raise b.BenchError(
            f"{args.dir} has {free / MIB / 1024:.1f} GiB free; this needs about "
            f"{needed / MIB / 1024:.1f} GiB (the model and the server's copy). Free some space, "
            "pass --dir on a larger disk, or a smaller --size-mib"
        )
    print(f"# large model: {b.machine()}; {args.size_mib} MiB "
          f"{'sparse' if args.sparse else 'random'} model.pkl, {args.runs} runs per client; "
          f"{free / MIB / 1024:.0f} GiB free in {args.dir}")
    curl = shutil.which("curl")
    if curl is None:
        raise b.BenchError("curl is not installed; install it (apt-get install curl)")

    with tempfile.TemporaryDirectory(prefix="bench-large-", dir=args.dir) as tmp:
        work = Path(tmp)
        fixture = work / "fixture"
        model = write_model(fixture, size, args.sparse)
        cache = work / "policy-cache"
        with b.MlflowServer(work / "server") as server:
            rest = b.Rest(server.url)
            experiment = rest.create_experiment("curl_uploads")
            # Fill the policy cache with a small push.
            small = b.make_fixture(work / "small", 0.9, 1)
            b.pusher_verdict(small, b.run_measured(
                b.pusher_command(small, server.url, "warmup"),
                env=b.clean_env(MODEL_PUSHER_CACHE_DIR=cache), cwd=work))
            b.wait_for_calm()

            results = {"model-pusher": [], "curl": []}
            for round_ in range(args.runs):
                order = ["model-pusher", "curl"] if round_ % 2 == 0 else ["curl", "model-pusher"]
                for who in order:
                    if who == "model-pusher":
                        measured = b.run_measured(
                            b.pusher_command(fixture, server.url, f"large_{round_}", "-v"),
                            env=b.clean_env(MODEL_PUSHER_CACHE_DIR=cache), cwd=work)
                        verdict, _ = b.pusher_verdict(fixture, measured)
                        if verdict != "promote":
                            raise b.BenchError(f"the large push gave {verdict}, not promote")
                        upload = upload_seconds(measured.stderr)
                    else:
                        run = rest.create_run(experiment)
                        url = (f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment}/"
                               f"{run['run_id']}/artifacts/model/big.bin")
                        measured = b.run_measured(
                            [curl, "-sS", "--fail", "-T", model, "-o", "/dev/null", url])
                        if measured.returncode != 0:
                            raise b.BenchError(f"curl failed: {measured.stderr.strip()}")
                        upload = None
                    stored = sum(p.stat().st_size for p in server.artifacts.rglob("*")
                                 if p.is_file())
                    if stored < size:
                        raise b.BenchError(
                            f"{who}: the server holds {stored} bytes after the upload, "
                            f"not the {size} sent")
                    empty_dir(server.artifacts)
                    results[who].append({"wall_s": measured.wall_s,
                                         "peak_rss_mib": measured.max_rss_kib / 1024,
                                         "upload_s": upload})
                print(f"# round {round_ + 1}/{args.runs} done; {b.load_average()}", flush=True)
    report(args, size, results)


def report(args, size, results):
    figures = {}
    rows = []
    for who, runs in results.items():
        wall = b.median([r["wall_s"] for r in runs])
        uploads = [r["upload_s"] for r in runs if r["upload_s"]]
        figures[who] = {
            "wall_s": wall,
            "wall_s_all": [r["wall_s"] for r in runs],
            "throughput_mib_s": size / MIB / wall,
            "upload_s": b.median(uploads) if uploads else None,
            "upload_throughput_mib_s": size / MIB / b.median(uploads) if uploads else None,
            "peak_rss_mib": b.median([r["peak_rss_mib"] for r in runs]),
            "peak_rss_mib_all": [r["peak_rss_mib"] for r in runs],
        }
        f = figures[who]
        rows.append([
            who, f"{wall:.2f}", b.spread([r["wall_s"] for r in runs]),
            f"{f['throughput_mib_s']:.0f}",
            f"{f['upload_throughput_mib_s']:.0f}" if uploads else "-",
            f"{f['peak_rss_mib']:.1f}",
        ])
    print()
    b.print_table(["client", "wall s (median)", "range", "MiB/s (whole)",
                   "MiB/s (upload only)", "peak RSS MiB"], rows)

    r, c = figures["model-pusher"], figures["curl"]
    whole = r["throughput_mib_s"] / c["throughput_mib_s"]
    upload = (r["upload_throughput_mib_s"] / c["throughput_mib_s"]
              if r["upload_throughput_mib_s"] else None)
    print("\nmodel-pusher / curl throughput: "
          + (f"{upload:.0%} (upload)" if upload else "upload time not found in the -v log")
          + f", {whole:.0%} (whole push against curl's upload)")
    print()
    b.budget("peak RSS", r["peak_rss_mib"] < RSS_BUDGET_MIB,
             f"{r['peak_rss_mib']:.1f} MiB (budget under {RSS_BUDGET_MIB} MiB; "
             f"highest run {max(r['peak_rss_mib_all']):.1f} MiB)")
    ratio = upload if upload else whole
    b.budget("throughput", ratio >= THROUGHPUT_BUDGET,
             f"{ratio:.0%} of curl's ({'upload' if upload else 'whole push'}; budget 80%)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    b.run_main(main)
