"""Where extauth's time goes under scenario 1 load: py-spy while wrk drives the list.

    .venv/bin/pip install py-spy        # once
    .venv/bin/python -m benchmarks.profile [--duration 10]
                                           [--server extauth|reference|bare]
                                           [--scenario 1|2|3] [--out benchmarks/profile]
                                           [--no-svg]

Sets up the same fixture as ``benchmarks.run`` (10-user database, fake
provider), starts the server pinned to the first CPU, drives scenario 1 with
``wrk -t1 -c50`` from the second, and records it with ``py-spy record`` (also
on the second CPU): once in raw (collapsed-stack) format, which this script
sorts into categories, and once as a flame graph SVG. Both land in ``--out``
(``<server>-list.txt`` and ``<server>-list.svg``; ``-nolink`` with
``--scenario 2``, get by id without a link; ``-validate`` with ``--scenario
3``, which drives get-by-id with a provider call instead). extauth runs as
the benchmark runs it, without its access log.
Prints, and writes to ``<server>-list.json``:

* per category (connexion layers, validation, security, json, sqlite, the
  thread hop, uvicorn, logging, ...), the share of samples whose innermost
  frame is in it ("self") and the share of samples that pass through it
  ("inclusive");
* the top functions by self samples;
* the split between the event-loop thread and the worker threads.

Samples are of every thread py-spy does not consider idle: the event loop
when it is not waiting in epoll, and the anyio worker threads that run the
store calls (a query in SQLite's C code counts). An anyio worker waiting for
work shows up as busy in ``threading.Condition.wait``; such samples are
dropped and counted apart. A thread waiting for the GIL counts as busy where
it waits. ``--gil`` samples only the GIL holder instead (with py-spy 0.4 on
Python 3.11 that finds the event loop thread only, so the worker threads'
Python time goes missing).

py-spy pauses the server for every sample (its default), which cuts the
server's throughput by half or more while profiling but keeps the stacks
exact; ``--nonblocking`` does not pause it, and then blames impossible
frames. The per-request figures ("self us/request") are busy thread-time per
request under the profiler: compare them between servers and categories, not
with the benchmark's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.run import (
    API,
    ROOT,
    Bench,
    Load,
    Provider,
    Server,
    free_port,
    seed,
    write_config,
)

# (category, pattern on "file:function"); first match wins.
CATEGORIES: list[tuple[str, str]] = [
    ("import machinery (httpcore: `import sniffio` per call)",
     r"<frozen importlib|_distutils_hack|httpcore/_synchronization\.py:current_async_library"),
    ("httpx/httpcore/h11 (provider calls)", r"/httpx/|/httpcore/|/h11/|extauth/providers/"),
    ("logging (access log)", r"/logging/|extauth/cli/serve\.py:RedactFilter|uvicorn/logging\.py"),
    ("json encode/decode", r"/json/"),
    ("connexion security", r"connexion/security\.py|connexion/middleware/security\.py"
                           r"|handlers/security\.py"),
    ("validation (connexion validators, jsonschema)",
     r"connexion/validators/|connexion/middleware/(request|response)_validation\.py"
     r"|/jsonschema|jsonschema_rs|referencing/"),
    ("connexion routing", r"connexion/middleware/routing\.py"),
    ("connexion parameter decorators", r"connexion/decorators/|connexion/uri_parsing\.py"
                                       r"|connexion/operations/"),
    ("connexion context/lifecycle", r"connexion/lifecycle\.py|connexion/context\.py"
                                    r"|connexion/middleware/context\.py"),
    ("connexion other middleware", r"connexion/"),
    ("sqlite (store queries)", r"extauth/store/|sqlite_utils/|/sqlite3/|benchmarks/bare_app\.py:"
                               r"(Database|session|agent|links_of|link_of)"),
    ("session check (hash, parse)", r"extauth/sessions\.py|/hashlib|/hmac"),
    ("thread hop (loop executor, anyio)", r"anyio/to_thread\.py|anyio/_backends|anyio/_core"
                                          r"|/threading\.py|/queue\.py|concurrent/futures"),
    ("extauth handlers and links", r"extauth/|handlers/|benchmarks/(reference|bare)_app\.py"),
    ("starlette (requests, responses, routing)", r"starlette/"),
    ("uvicorn (HTTP protocol)", r"uvicorn/|httptools"),
    ("event loop (asyncio/uvloop, incl. its C code)", r"/asyncio/|uvloop"),
    ("dataclasses, datetime, other stdlib", r"/dataclasses\.py|/_strptime\.py|/datetime\.py"
                                            r"|/enum\.py|/typing\.py|/functools\.py"
                                            r"|/contextlib\.py|/re/|/inspect\.py"),
]
# Frames every stack starts with (process and thread start-up, the loop's own
# run call): not counted in "inclusive" shares.
BOOT = re.compile(r"<frozen runpy>|click/|extauth/cli/(_base|serve)\.py:(main|serve|<module>)"
                  r"|benchmarks/(reference|bare)_app\.py:(main|<module>)|uvicorn/main\.py"
                  r"|uvicorn/server\.py:Server\.(run|serve|_serve)|asyncio/runners\.py"
                  r"|uvloop/__init__\.py|threading\.py:Thread\._bootstrap"
                  r"|anyio/_backends/_asyncio\.py:WorkerThread\.run")
NAMES = {1: "list", 2: "nolink", 3: "validate"}
# How each server is started (extauth as the benchmark starts it: no access log).
MODULES = {"extauth": ["extauth.cli", "serve", "--no-access-log"],
           "reference": ["benchmarks.reference_app"], "bare": ["benchmarks.bare_app"]}
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def category(frame: tuple[str, str]) -> str:
    key = f"{frame[1]}:{frame[0]}"
    for name, pattern in CATEGORIES:
        if re.search(pattern, key):
            return name
    return "other"


def parse_raw(path: Path) -> list[tuple[str, list[tuple[str, str]], int]]:
    """py-spy raw lines: ``thread (0x..);frame;frame;... count`` -> (thread, frames, n)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        thread = ""
        if parts and parts[0].startswith(("thread ", "process ")):
            while parts and parts[0].startswith(("thread ", "process ")):
                if parts[0].startswith("thread "):
                    thread = parts[0]
                parts = parts[1:]
        frames = []
        for p in parts:
            m = FRAME.match(p.strip())
            frames.append((m["func"], m["file"]) if m else (p.strip(), ""))
        out.append((thread, frames, int(count)))
    return out


def analyse(stacks: list[tuple[str, list[tuple[str, str]], int]]) -> dict[str, Any]:
    total = sum(n for _, frames, n in stacks if frames and not _idle(frames[-1])) or 1
    self_cat: Counter[str] = Counter()
    incl_cat: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    idle = 0
    for thread, frames, n in stacks:
        if not frames:
            continue
        func, file = frames[-1]
        if _idle((func, file)):
            idle += n  # a worker thread waiting for work
            continue
        leaf = category((func, file))
        self_cat[leaf] += n
        self_fn[f"{func} ({_short(file)})"] += n
        cats = {category(f) for f in frames if not BOOT.search(f"{f[1]}:{f[0]}")} | {leaf}
        for cat in cats:
            incl_cat[cat] += n
        worker = bool(thread) and not thread.endswith("MainThread")
        threads["worker threads" if worker else "event loop thread"] += n
    def pct(c: Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in c.most_common()}

    return {
        "samples": total,
        "idle_worker_samples_dropped": idle,
        "self_by_category_pct": pct(self_cat),
        "inclusive_by_category_pct": pct(incl_cat),
        "top_functions_self_pct": dict(list(pct(self_fn).items())[:25]),
        "threads_pct": pct(threads),
    }


def _idle(frame: tuple[str, str]) -> bool:
    """A worker thread waiting for work: anyio's (in ``Condition.wait``), or the
    loop's executor's (its ``_worker`` blocked in the C queue's ``get``)."""
    func, file = frame
    return ((file.endswith("/threading.py") and func in ("Condition.wait", "Event.wait"))
            or (file.endswith("concurrent/futures/thread.py") and func == "_worker"))


def _short(file: str) -> str:
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def report(out: Path, server: str, scenario: int, rate: int, duration: int,
           rps_raw: float | None) -> dict[str, Any]:
    """Analyse ``<out>/<server>-<name>.txt``; print, and write ``.json`` beside it."""
    name = NAMES[scenario]
    result = analyse(parse_raw(out / f"{server}-{name}.txt"))
    result["server"], result["scenario"] = server, scenario
    result["rate_hz"], result["duration_s"] = rate, duration
    # Busy thread-time per request, split by category: comparable between
    # servers (and runs) where shares are not.
    if rps_raw:
        busy = result["samples"] / rate / duration  # busy threads on average
        per_req_us = busy / rps_raw * 1e6
        result["rps_under_profiler"] = round(rps_raw, 1)
        result["busy_us_per_request"] = round(per_req_us, 1)
        result["self_us_per_request_by_category"] = {
            k: round(v * per_req_us / 100, 1) for k, v in result["self_by_category_pct"].items()}
    (out / f"{server}-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{server}, scenario {scenario} ({name}), {result['samples']} samples")
    print(f"  threads: {result['threads_pct']}; {result.get('rps_under_profiler')} req/s "
          f"under py-spy, {result.get('busy_us_per_request')} busy thread-us per request")
    print(f"  {'category':<66}{'self %':>7}{'inclusive %':>13}{'self us/request':>17}")
    per = result.get("self_us_per_request_by_category", {})
    for cat, incl in result["inclusive_by_category_pct"].items():
        print(f"  {cat:<66}{result['self_by_category_pct'].get(cat, 0.0):>7.1f}"
              f"{incl:>13.1f}{per.get(cat, 0.0):>17.1f}")
    print("  top functions (self %):")
    for fn, share in list(result["top_functions_self_pct"].items())[:15]:
        print(f"    {share:5.1f}  {fn}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="seconds of sampling [10]")
    p.add_argument("--rate", type=int, default=200, help="samples per second [200]")
    p.add_argument("--server", choices=tuple(MODULES), default="extauth")
    p.add_argument("--scenario", type=int, choices=tuple(NAMES), default=1,
                   help="1: the list [default]; 2: get by id without a link; "
                        "3: get by id, validated at the provider")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "profile"))
    p.add_argument("--no-svg", action="store_true", help="skip the flame graph pass")
    p.add_argument("--nonblocking", action="store_true",
                   help="py-spy --nonblocking: don't pause the server for each sample. Less "
                        "slowdown, but stacks can be wrong (it blamed 14%% of the time on "
                        "a 2 us uuid4 call)")
    p.add_argument("--native", action="store_true",
                   help="also sample C frames (no idle detection then: see the raw file)")
    p.add_argument("--gil", action="store_true",
                   help="only sample the thread holding the GIL (py-spy --gil)")
    p.add_argument("--reanalyse", action="store_true",
                   help="record nothing: analyse the raw file of an earlier run again")
    args = p.parse_args(argv)
    if args.reanalyse:
        out = Path(args.out)
        name = NAMES[args.scenario]
        old = json.loads((out / f"{args.server}-{name}.json").read_text())
        report(out, args.server, args.scenario, old["rate_hz"], old["duration_s"],
               old.get("rps_under_profiler"))
        return 0
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = cpus[0], (cpus[1] if len(cpus) > 1 else cpus[0])
    os.sched_setaffinity(0, {load_cpu})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="extauth-profile-"))
    provider = Provider(tmp, load_cpu)
    server: Server | None = None
    try:
        config = tmp / "extauth.yaml"
        write_config(config, provider.url)
        tokens = seed(tmp / "small.db")
        port = free_port()
        cmd = [sys.executable, "-m", *MODULES[args.server], "--db", str(tmp / "small.db"),
               "--config", str(config), "--port", str(port)]
        server = Server(args.server, cmd, port, tmp / "server.log", server_cpu).start()
        path, user = {1: (API, "list"), 2: (f"{API}/fake", "nolink"),
                      3: (f"{API}/fake", "linked")}[args.scenario]
        load = Load([("GET", path, {"Coder-Session-Token": tokens[user]}, None)])
        bench = Bench(tmp, load_cpu, args.duration, 0, args.connections)
        bench.wrk(port, load, 3)  # warm-up
        name = NAMES[args.scenario]
        passes = [("raw", out / f"{args.server}-{name}.txt")]
        if not args.no_svg:
            passes.append(("flamegraph", out / f"{args.server}-{name}.svg"))
        rps: dict[str, float] = {}
        for fmt, target in passes:
            wrk = subprocess.Popen(
                ["taskset", "-c", str(load_cpu), "wrk", "-t1", f"-c{args.connections}",
                 f"-d{args.duration + 4}s", "-s", str(load.script(tmp / f"p-{fmt}.lua")),
                 f"http://127.0.0.1:{port}"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(2)
            spy = ["taskset", "-c", str(load_cpu), pyspy, "record", "--pid", str(server.pid),
                   "--duration", str(args.duration), "--rate", str(args.rate),
                   "--format", fmt, "-o", str(target)]
            if fmt == "raw":
                spy += ["--threads", "--full-filenames", "--nolineno"]
            if args.gil:
                spy.append("--gil")
            if args.native:
                spy.append("--native")
            elif args.nonblocking:
                spy.append("--nonblocking")
            subprocess.run(spy, check=True, capture_output=True, timeout=args.duration + 60)
            text, _ = wrk.communicate(timeout=args.duration + 60)
            line = next((ln for ln in text.splitlines() if ln.startswith("BENCHJSON ")), "")
            if line:
                res = json.loads(line.removeprefix("BENCHJSON "))
                rps[fmt] = res["requests"] / (res["duration_us"] / 1e6)
                print(f"{fmt} pass: {rps[fmt]:.0f} req/s under py-spy, "
                      f"p50 {res['p50_us'] / 1000:.1f} ms")
        report(out, args.server, args.scenario, args.rate, args.duration, rps.get("raw"))
        print(f"wrote {out}/{args.server}-{name}.{{txt,json{',svg' if not args.no_svg else ''}}}")
    finally:
        if server is not None:
            server.stop()
        provider.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
