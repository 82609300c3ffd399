"""What the benchmarks in bench/ share: a throwaway MLflow server, a counting HTTP proxy, child
processes measured for wall time and peak memory, fixtures, and the figures' formatting.

Only the standard library is used, so that the benchmarks run with the project's virtualenv
(.venv/bin/python) or any Python 3.9+; MLflow itself is only needed by the server, which runs
from .venv through scripts/mlflow-server.sh.
"""

import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PUSHER = ROOT / "target" / "release" / "model-pusher"
MLFLOW_SERVER_SH = ROOT / "scripts" / "mlflow-server.sh"
MAKE_FIXTURE = ROOT / "scripts" / "make_fixture.py"


class BenchError(Exception):
    """A benchmark cannot run; the message says what to do."""


def fail(message):
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr)
    sys.exit(1)


def run_main(main):
    """Runs a benchmark's `main`: a BenchError ends it with its message, Ctrl-C with 130."""
    try:
        main()
    except BenchError as error:
        fail(str(error))
    except KeyboardInterrupt:
        sys.exit(130)


def require_pusher():
    if not os.access(PUSHER, os.X_OK):
        raise BenchError(
            f"no release binary at {PUSHER}; build it with "
            "`cargo xtask policies && cargo build --release -p model-pusher` (or run bench/run.sh)"
        )
    policies = ROOT / "target" / "policies" / "threshold.wasm"
    if not policies.exists():
        raise BenchError(f"no bundled policy at {policies}; build them with `cargo xtask policies`")


def require_venv():
    if not os.access(ROOT / ".venv" / "bin" / "mlflow", os.X_OK):
        raise BenchError("no MLflow in .venv; run scripts/setup.sh first")


# ----- machine -----


def machine():
    """nproc, CPU model and RAM, as one line."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown RAM"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {ram}"


def load_average():
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def wait_for_calm(threshold=1.0, patience=60.0):
    """Waits up to `patience` seconds for the 1-minute load average to fall under `threshold`
    (other builds share the machine); says so either way."""
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    state = "calm" if os.getloadavg()[0] < threshold else "busy, measuring anyway"
    print(f"# machine {state}: {load_average()}", flush=True)


# ----- processes -----


@dataclass
class Measured:
    wall_s: float
    max_rss_kib: int
    returncode: int
    stdout: str
    stderr: str


GNU_TIME = Path("/usr/bin/time")


def run_measured(command, env=None, cwd=None):
    """Runs a command to completion; returns its wall time and its peak resident set size.

    The peak comes from GNU time (`/usr/bin/time -f %M`), which forks the command from its own
    small process. wait4 or RUSAGE_CHILDREN straight from this process would not do: the kernel
    carries the high-water mark of the address space a child had before exec (a copy of this
    Python process) into the child's ru_maxrss, so every figure would be at least this
    process's own size (about 25 MiB here), which is the whole of model-pusher's."""
    if not os.access(GNU_TIME, os.X_OK):
        raise BenchError(
            "GNU time is needed at /usr/bin/time to measure peak memory; install it "
            "(apt-get install time)"
        )
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r", suffix=".rss") as rss:
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(GNU_TIME), "-f", "%M", "-o", rss.name] + [str(part) for part in command],
            stdout=out, stderr=err, env=env, cwd=cwd,
        )
        process.wait()
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        # With a non-zero exit, GNU time writes "Command exited with non-zero status N" first.
        lines = rss.read().split()
        return Measured(
            wall_s=wall,
            max_rss_kib=int(lines[-1]) if lines and lines[-1].isdigit() else 0,
            returncode=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def clean_env(**extra):
    """This process's environment without MLflow client settings, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    env.pop("KFP_RUN_ID", None)
    env.update({name: str(value) for name, value in extra.items()})
    return env


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----- the MLflow server -----


class MlflowServer:
    """A local `mlflow server` (sqlite backend, proxied artifacts under DIR/artifacts, job
    execution off) started through scripts/mlflow-server.sh on a free port, in its own process
    group, and stopped with it."""

    def __init__(self, state_dir):
        self.state_dir = Path(state_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}.log"

    @property
    def artifacts(self):
        return self.state_dir / "artifacts"

    def __enter__(self):
        require_venv()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(MLFLOW_SERVER_SH), str(self.port), str(self.state_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None:
                self.stop()
                raise BenchError(
                    f"the MLflow server exited before answering {self.url}/health:\n"
                    + self._log_tail()
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(
                    f"the MLflow server did not answer {self.url}/health within 120 s:\n"
                    + self._log_tail()
                )
            time.sleep(0.3)

    def _log_tail(self):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no server log)"

    def stop(self):
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        # uvicorn's worker may outlive the CLI for a moment: end the whole group.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait()
        self.process = None

    def __exit__(self, *exc):
        self.stop()


# ----- a counting reverse proxy -----

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


class _ForwardingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None

    def log_message(self, *args):
        pass

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        return None

    def _exchange(self, body, headers):
        if self.upstream is None:
            self.upstream = http.client.HTTPConnection(
                "127.0.0.1", self.server.upstream_port, timeout=600
            )
        self.upstream.request(self.command, self.path, body=body, headers=headers)
        response = self.upstream.getresponse()
        return response, response.read()

    def _forward(self):
        body = self._read_body()
        self.server.record(self.command, self.path)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        try:
            response, data = self._exchange(body, headers)
        except (http.client.HTTPException, OSError):
            # The server closed an idle kept-alive connection: once more on a new one.
            if self.upstream is not None:
                self.upstream.close()
            self.upstream = None
            response, data = self._exchange(body, headers)
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    def finish(self):
        super().finish()
        if self.upstream is not None:
            self.upstream.close()


class CountingProxy:
    """A threaded HTTP proxy on a free loopback port that forwards every request to the server
    at `upstream_url` and records its method and path (with the query), in arrival order.
    Bodies are buffered, which is fine for the small fixture models it is used with."""

    def __init__(self, upstream_url):
        self.upstream_port = int(upstream_url.rsplit(":", 1)[1])
        self._lock = threading.Lock()
        self._requests = []
        self.httpd = None

    def __enter__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardingHandler)
        self.httpd.daemon_threads = True
        self.httpd.upstream_port = self.upstream_port
        self.httpd.record = self._record
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _record(self, method, path):
        with self._lock:
            self._requests.append((method, path))

    def take(self):
        """The requests recorded since the last call."""
        with self._lock:
            taken, self._requests = self._requests, []
        return taken


RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
LOGGED_MODEL_ID = re.compile(r"\bm-[0-9a-f]{32}\b")


def show_request(method, path):
    """`METHOD /path` with the query dropped and ids replaced by placeholders."""
    path = path.split("?", 1)[0]
    path = RUN_ID.sub("<run_id>", LOGGED_MODEL_ID.sub("<model_id>", path))
    path = re.sub(r"(/mlflow-artifacts/artifacts/)\d+/", r"\1<exp_id>/", path)
    return f"{method} {path}"


# ----- the MLflow REST API, for setting a registry up -----


class Rest:
    """A minimal MLflow REST client (stdlib only) for building registries quickly."""

    def __init__(self, url):
        self.url = url

    def call(self, method, endpoint, body=None, query=None):
        url = f"{self.url}/api/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raise BenchError(
                f"{method} {endpoint} failed: {error.code} {error.read()[:300]!r}"
            ) from None

    def post(self, endpoint, body):
        return self.call("POST", endpoint, body)

    def get(self, endpoint, **query):
        return self.call("GET", endpoint, query=query)

    def create_experiment(self, name):
        return self.post("experiments/create", {"name": name})["experiment_id"]

    def create_run(self, experiment_id, metrics=None):
        run = self.post(
            "runs/create",
            {"experiment_id": experiment_id, "start_time": int(time.time() * 1000)},
        )["run"]["info"]
        if metrics:
            now = int(time.time() * 1000)
            self.post(
                "runs/log-batch",
                {
                    "run_id": run["run_id"],
                    "metrics": [
                        {"key": k, "value": v, "timestamp": now, "step": 0}
                        for k, v in metrics.items()
                    ],
                },
            )
        return run



# ----- fixtures and pushes -----


def make_fixture(out, accuracy, seed):
    """The pipeline's hand-off (model.pkl, metrics.json, params.yaml) from scripts/make_fixture.py."""
    result = subprocess.run(
        [str(VENV_PYTHON), str(MAKE_FIXTURE), str(out), "--accuracy", str(accuracy),
         "--seed", str(seed)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BenchError(f"make_fixture.py failed:\n{result.stderr}")
    return Path(out)


def pusher_command(fixture, tracking_uri, model_name, *extra):
    """A push of `fixture` as a new pipeline run: without its own run id, a push of the same
    files to the same model would be taken for a re-run of the earlier one and write nothing."""
    fixture = Path(fixture)
    return [
        PUSHER, "push",
        "--tracking-uri", tracking_uri,
        "--model-name", model_name,
        "--param-path", fixture / "params.yaml",
        "--model-path", fixture / "model",
        "--metrics-path", fixture / "metrics",
        "--decision-out", fixture / "decision.json",
        "--no-log-file",
        "--pipeline-run-id", f"bench-{uuid.uuid4()}",
        *extra,
    ]


def pusher_verdict(fixture, measured):
    """The verdict model-pusher wrote, and the requests it says it made."""
    if measured.returncode != 0:
        raise BenchError(
            f"model-pusher exited with {measured.returncode}:\n{measured.stderr[-2000:]}"
        )
    report = json.loads((Path(fixture) / "decision.json").read_text())
    return report["verdict"], report["requests"]


# ----- figures -----


def median(values):
    return statistics.median(values)


def spread(values):
    return f"{min(values):.3g}..{max(values):.3g}" if len(values) > 1 else ""


def print_table(headers, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    print(line.format(*headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))


def budget(label, ok, detail):
    print(f"budget  {'met   ' if ok else 'MISSED'}  {label}: {detail}")
