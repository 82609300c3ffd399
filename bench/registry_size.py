"""Registry size: does a model-pusher push cost more on a registry with history?

Why: a pusher that lists versions, pages through searches or scans experiments gets slower and
chattier as a model accumulates versions and the registry accumulates models; model-pusher
should make the same requests, in about the same time, whatever the registry holds.

Two local MLflow 3.17.2 servers run side by side:
  full    200 versions of `bench_model` (each from its own run in the experiment `bench_model`,
          each promoted to Production in turn, so 199 are Archived and the last is the
          champion) and 200 other registered models with one Production version each, all
          created directly through the MLflow REST API (runs/create, runs/log-batch,
          registered-models/create, model-versions/create, model-versions/transition-stage),
          which is quicker than pushing them;
  empty   a fresh server, where model-pusher's first push of `bench_model` makes the champion.
On each, model-pusher pushes, N times, alternating between the servers:
  hold      `bench_model` with a candidate 1.1% better than the champion (under the threshold);
  promote   a model name the registry has never seen.
Printed: the median wall time, and the HTTP requests, counted at a counting proxy in front of
each server (one more push per kind); then the ratios full/empty. Requests must not grow.

usage: .venv/bin/python bench/registry_size.py [--runs N] [--versions 200] [--models 200]
                                               [--json OUT]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as b  # noqa: E402

MODEL = "bench_model"
CHAMPION_METRICS = {"accuracy": 0.90, "precision": 0.91, "recall": 0.89}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed pushes per kind and server")
    parser.add_argument("--versions", type=int, default=200, help="versions of the model (200)")
    parser.add_argument("--models", type=int, default=200, help="other models (200)")
    parser.add_argument("--json", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args()
    if args.runs < 1 or args.versions < 1 or args.models < 0:
        parser.error("--runs and --versions must be at least 1, --models at least 0")
    return args


def register(rest, name, experiment_id):
    """One version of `name` from a new run with the champion's metrics, moved to Production
    (the server archives the version there before)."""
    run = rest.create_run(experiment_id, CHAMPION_METRICS)
    version = rest.post(
        "model-versions/create",
        {"name": name, "source": f"runs:/{run['run_id']}/model", "run_id": run["run_id"]},
    )["model_version"]["version"]
    rest.post(
        "model-versions/transition-stage",
        {"name": name, "version": version, "stage": "Production",
         "archive_existing_versions": True},
    )


def fill(url, versions, models):
    rest = b.Rest(url)
    started = time.perf_counter()
    experiment = rest.create_experiment(MODEL)
    rest.post("registered-models/create", {"name": MODEL})
    for _ in range(versions):
        register(rest, MODEL, experiment)
    others = rest.create_experiment("other_models")
    for i in range(models):
        name = f"other_model_{i:03}"
        rest.post("registered-models/create", {"name": name})
        register(rest, name, others)
    latest = rest.get("registered-models/get-latest-versions", name=MODEL, stages="Production")
    version = latest["model_versions"][0]["version"]
    print(
        f"# filled the full registry in {time.perf_counter() - started:.0f} s: {MODEL} has "
        f"{versions} versions (champion: version {version}), plus {models} other models",
        flush=True,
    )


def push(fixture, url, name, cache, work, expected):
    measured = b.run_measured(
        b.pusher_command(fixture, url, name),
        env=b.clean_env(MODEL_PUSHER_CACHE_DIR=cache),
        cwd=work,
    )
    verdict, reported = b.pusher_verdict(fixture, measured)
    if verdict != expected:
        raise b.BenchError(f"push of {name} to {url} gave {verdict}, not {expected}")
    return measured, reported


def main():
    args = parse_args()
    b.require_pusher()
    b.require_venv()
    print(f"# registry size: {b.machine()}; {args.runs} runs per kind and server")

    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        work = Path(tmp)
        cache = work / "policy-cache"
        fixtures = {
            "hold": b.make_fixture(work / "hold", 0.91, 2),
            "promote": b.make_fixture(work / "promote", 0.90, 1),
        }
        expected = {"hold": "hold", "promote": "promote"}
        with b.MlflowServer(work / "full") as full, b.MlflowServer(work / "empty") as empty, \
                b.CountingProxy(full.url) as full_proxy, b.CountingProxy(empty.url) as empty_proxy:
            servers = {"full": (full, full_proxy), "empty": (empty, empty_proxy)}
            fill(full.url, args.versions, args.models)
            # The empty registry's champion comes from model-pusher's own first push; this also
            # fills the policy cache. The full one gets a warm-up push of its own.
            push(fixtures["promote"], empty.url, MODEL, cache, work, "promote")
            push(fixtures["promote"], full.url, "warmup", cache, work, "promote")
            b.wait_for_calm()

            timed = {}
            reported = {}
            for round_ in range(args.runs):
                order = ["full", "empty"] if round_ % 2 == 0 else ["empty", "full"]
                for kind in ("hold", "promote"):
                    for which in order:
                        name = MODEL if kind == "hold" else f"fresh_{round_}"
                        measured, count = push(fixtures[kind], servers[which][0].url, name,
                                               cache, work, expected[kind])
                        timed.setdefault((which, kind), []).append(measured.wall_s)
                        reported.setdefault((which, kind), set()).add(count)
                print(f"# round {round_ + 1}/{args.runs} done; {b.load_average()}", flush=True)

            counted = {}
            for which, (_, proxy) in servers.items():
                for kind in ("hold", "promote"):
                    name = MODEL if kind == "hold" else "counted_fresh"
                    proxy.take()
                    push(fixtures[kind], proxy.url, name, cache, work, expected[kind])
                    counted[(which, kind)] = proxy.take()

    report(args, timed, counted, reported)


def report(args, timed, counted, reported):
    rows = []
    figures = {}
    for kind in ("hold", "promote"):
        for which in ("full", "empty"):
            walls = timed[(which, kind)]
            figures[f"{kind} {which}"] = {
                "wall_s": b.median(walls),
                "wall_s_all": walls,
                "requests": len(counted[(which, kind)]),
                "requests_reported": sorted(reported[(which, kind)]),
            }
            rows.append([f"{kind}, {which} registry", f"{b.median(walls) * 1000:.0f}",
                         b.spread([w * 1000 for w in walls]), len(counted[(which, kind)])])
    print()
    b.print_table(["model-pusher push", "wall ms (median)", "range", "requests"], rows)

    print()
    ratio_rows = []
    for kind in ("hold", "promote"):
        f, e = figures[f"{kind} full"], figures[f"{kind} empty"]
        ratio_rows.append([kind, f"{f['wall_s'] / e['wall_s']:.2f}x",
                           f"{f['requests'] / e['requests']:.2f}x"])
    b.print_table(["full / empty", "wall time", "requests"], ratio_rows)

    print()
    for kind in ("hold", "promote"):
        f, e = figures[f"{kind} full"], figures[f"{kind} empty"]
        b.budget(f"{kind}: requests do not grow", f["requests"] <= e["requests"],
                 f"{f['requests']} on the full registry, {e['requests']} on the empty one")
        same = counted[("full", kind)] == counted[("empty", kind)]
        paths_same = [b.show_request(*r) for r in counted[("full", kind)]] == \
            [b.show_request(*r) for r in counted[("empty", kind)]]
        print(f"        {kind}: the same requests on both: {'yes' if paths_same else 'NO'}"
              + ("" if same or paths_same else " (see --json)"))
    for key, counts in sorted(reported.items()):
        if len(counts) != 1 or counts != {figures[f'{key[1]} {key[0]}']['requests']}:
            print(f"note: model-pusher reported {sorted(counts)} requests for {key}")

    if args.json:
        figures["requests"] = {
            f"{kind} {which}": [b.show_request(m, p) for m, p in requests]
            for (which, kind), requests in counted.items()
        }
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    b.run_main(main)
