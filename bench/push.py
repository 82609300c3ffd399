"""Push, end to end: model-pusher against the Python pusher written with the MLflow client
(the baseline, /work/shared/bench/reference_pusher.py), side by side in one run, on one local
MLflow 3.17.2 server, with the same fixture.

Why: model-pusher replaces a Python step whose cost is mostly starting Python and the MLflow
client and talking to the registry; this measures what a pipeline run pays for either.

For each pusher and three kinds of push,
  promote   a fresh model name (no champion: the first version is promoted),
  hold      the same name again with a candidate 1.1% better (under the 5% threshold),
  replace   the same name with a candidate 10% better (the new version replaces the champion),
it prints the median wall time of N runs (each push a new process, the two pushers alternating),
the median peak resident memory (`/usr/bin/time -f %M`: the largest of the pusher's processes,
such as MLflow's requirement-inference subprocess), and the number of HTTP requests, counted at a
small counting proxy in front of the server (a separate push per kind, so that the proxy adds no
latency to the timed runs). model-pusher's compiled-policy cache is warmed first, as a pipeline
image would ship it; one more row measures promotes with `--no-policy-cache` (a cold cache).

Then the ratios python/model-pusher, the budgets (at least 20x less wall time, 10x less peak
memory, at most 15 requests per promote), and model-pusher's requests for one promote.

usage: .venv/bin/python bench/push.py [--runs N] [--reference PATH] [--json OUT]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as b  # noqa: E402

RUST = "model-pusher"
PYTHON = "python"
KINDS = [  # kind, fixture accuracy, fixture seed, expected verdict
    ("promote", 0.90, 1, "promote"),
    ("hold", 0.91, 2, "hold"),
    ("replace", 0.99, 3, "promote"),
]
COLD = "promote, no policy cache"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per push kind (5)")
    parser.add_argument(
        "--reference",
        type=Path,
        default=b.ROOT.parent / "shared" / "bench" / "reference_pusher.py",
        help="the Python pusher to compare with (default: ../shared/bench/reference_pusher.py "
        "from the repository root)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here, as JSON")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


class Pushers:
    def __init__(self, work, reference, fixtures):
        self.work = work
        self.reference = reference
        self.fixtures = fixtures
        self.cache = work / "policy-cache"

    def push(self, who, kind, url, name, *extra):
        """One push of fixture `kind` to `name`; returns the measurement and, for model-pusher,
        the requests it reported."""
        fixture = self.fixtures[kind]
        expected = dict((k, v) for k, _, _, v in KINDS)[kind]
        if who == RUST:
            measured = b.run_measured(
                b.pusher_command(fixture, url, name, *extra),
                env=b.clean_env(MODEL_PUSHER_CACHE_DIR=self.cache),
                cwd=self.work,
            )
            verdict, reported = b.pusher_verdict(fixture, measured)
        else:
            measured = b.run_measured(
                [b.VENV_PYTHON, self.reference, name, fixture / "params.yaml",
                 fixture / "model", fixture / "metrics"],
                env=b.clean_env(MLFLOW_TRACKING_URI=url),
                cwd=self.work,
            )
            if measured.returncode != 0:
                raise b.BenchError(
                    f"the reference pusher exited with {measured.returncode}:\n"
                    + measured.stderr[-2000:]
                )
            lines = [line for line in measured.stdout.splitlines() if line.startswith("{")]
            promoted = json.loads(lines[-1])["promoted"]
            verdict, reported = ("promote" if promoted else "hold"), None
        if verdict != expected:
            raise b.BenchError(f"{who} {kind} of {name} gave {verdict}, not {expected}")
        return measured, reported


def main():
    args = parse_args()
    if not args.reference.is_file():
        raise b.BenchError(
            f"the reference pusher is not at {args.reference}; pass its path with --reference "
            "(it is /work/shared/bench/reference_pusher.py on the development machine)"
        )
    b.require_pusher()
    b.require_venv()
    print(f"# push, end to end: {b.machine()}; {args.runs} runs per kind")

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        work = Path(tmp)
        fixtures = {
            kind: b.make_fixture(work / kind, accuracy, seed)
            for kind, accuracy, seed, _ in KINDS
        }
        pushers = Pushers(work, args.reference.resolve(), fixtures)
        with b.MlflowServer(work / "server") as server, b.CountingProxy(server.url) as proxy:
            print(f"# MLflow server {server.url}, counting proxy {proxy.url}")
            # Warm-up: fill the policy cache, the page cache and the server's own caches.
            pushers.push(RUST, "promote", server.url, "warmup_rust")
            pushers.push(PYTHON, "promote", server.url, "warmup_python")
            b.wait_for_calm()

            timed = {}  # (who, kind) -> [Measured]
            reported = []  # model-pusher's own request counts, kind by kind
            for round_ in range(args.runs):
                order = [RUST, PYTHON] if round_ % 2 == 0 else [PYTHON, RUST]
                for who in order:
                    name = f"timed_{who.replace('-', '_')}_{round_}"
                    for kind, *_ in KINDS:
                        measured, count = pushers.push(who, kind, server.url, name)
                        timed.setdefault((who, kind), []).append(measured)
                        if count is not None:
                            reported.append((kind, count))
                    if who == RUST:
                        measured, _ = pushers.push(
                            RUST, "promote", server.url, f"cold_{round_}", "--no-policy-cache"
                        )
                        timed.setdefault((RUST, COLD), []).append(measured)
                print(f"# round {round_ + 1}/{args.runs} done; {b.load_average()}", flush=True)

            counted = {}  # (who, kind) -> [(method, path)]
            for who in (RUST, PYTHON):
                name = f"counted_{who.replace('-', '_')}"
                for kind, *_ in KINDS:
                    proxy.take()
                    pushers.push(who, kind, proxy.url, name)
                    counted[(who, kind)] = proxy.take()
            proxy.take()
            pushers.push(RUST, "promote", proxy.url, "counted_cold", "--no-policy-cache")
            counted[(RUST, COLD)] = proxy.take()

    report(args, timed, counted, reported)


def report(args, timed, counted, reported):
    figures = {}
    rows = []
    for who, kind in [(w, k) for w in (RUST, PYTHON) for k, *_ in KINDS] + [(RUST, COLD)]:
        walls = [m.wall_s for m in timed[(who, kind)]]
        rss = [m.max_rss_kib / 1024 for m in timed[(who, kind)]]
        figures[f"{who} {kind}"] = {
            "wall_s": b.median(walls),
            "wall_s_all": walls,
            "peak_rss_mib": b.median(rss),
            "peak_rss_mib_all": rss,
            "requests": len(counted[(who, kind)]),
        }
        rows.append([
            f"{who} {kind}",
            f"{b.median(walls) * 1000:.0f}",
            b.spread([w * 1000 for w in walls]),
            f"{b.median(rss):.1f}",
            len(counted[(who, kind)]),
        ])
    print()
    b.print_table(["push", "wall ms (median)", "range", "peak RSS MiB", "requests"], rows)

    print()
    ratio_rows = []
    for kind, *_ in KINDS:
        r, p = figures[f"{RUST} {kind}"], figures[f"{PYTHON} {kind}"]
        ratio_rows.append([
            kind,
            f"{p['wall_s'] / r['wall_s']:.1f}x",
            f"{p['peak_rss_mib'] / r['peak_rss_mib']:.1f}x",
            f"{p['requests'] / r['requests']:.1f}x",
        ])
    b.print_table(["python / model-pusher", "wall time", "peak RSS", "requests"], ratio_rows)

    mismatched = [(kind, n) for kind, n in reported
                  if n != len(counted[(RUST, kind)])]
    print(
        "\nmodel-pusher's own request count agrees with the proxy's in every timed run"
        if not mismatched
        else f"\nmodel-pusher reported other request counts in some timed runs: {mismatched}"
    )

    print()
    for kind in ("promote", "replace"):
        r, p = figures[f"{RUST} {kind}"], figures[f"{PYTHON} {kind}"]
        wall, rss = p["wall_s"] / r["wall_s"], p["peak_rss_mib"] / r["peak_rss_mib"]
        b.budget(f"{kind}: wall time", wall >= 20, f"{wall:.1f}x less (budget 20x)")
        b.budget(f"{kind}: peak memory", rss >= 10, f"{rss:.1f}x less (budget 10x)")
        b.budget(f"{kind}: requests", r["requests"] <= 15,
                 f"{r['requests']} (budget at most 15)")

    for kind in ("promote", "hold", "replace"):
        print(f"\nmodel-pusher's requests for one {kind}:")
        for i, (method, path) in enumerate(counted[(RUST, kind)], 1):
            print(f"  {i:2}. {b.show_request(method, path)}")
    print("\nthe Python pusher's requests for one promote:")
    for i, (method, path) in enumerate(counted[(PYTHON, "promote")], 1):
        print(f"  {i:2}. {b.show_request(method, path)}")

    if args.json:
        figures["requests"] = {
            f"{who} {kind}": [b.show_request(m, p) for m, p in requests]
            for (who, kind), requests in counted.items()
        }
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    b.run_main(main)
