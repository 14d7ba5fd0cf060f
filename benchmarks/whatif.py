"""What would the profile's suggestions buy? Measure them without changing extauth.

    .venv/bin/python -m benchmarks.whatif [--duration 10] [--rounds 2] [--json out.json]

Starts ``extauth serve`` through a launcher that applies one change in memory
at process start (nothing in extauth/ is edited), and drives scenario 1 (the
list) against each variant, alternating with the unchanged server, on the
same fixture, CPUs and wrk settings as ``benchmarks.run``. ``sniffio`` is
also measured on scenario 3 (get by id, validated at the 20 ms provider),
where it matters. Variants:

    baseline      extauth as it is
    nolog         uvicorn's access log off (uvicorn.run(..., access_log=False))
    inspectcache  connexion's per-request inspect.signature() cached
                  (functools.lru_cache on connexion.utils.inspect_function_arguments)
    executor      store calls via loop.run_in_executor (context copied) instead of
                  anyio.to_thread.run_sync
    gcfreeze      gc.freeze() after start-up and gen-0 threshold 50,000
    sniffio       a ``sniffio`` module present (httpcore imports it for every lock
                  it sets up; when it is missing, every import scans sys.path)
    all           everything above together

Each is a what-if for the report, not a proposal of code: RESULTS.md says
which changes look worth making and how.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import gc
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

VARIANTS = ("baseline", "nolog", "inspectcache", "executor", "gcfreeze", "sniffio", "all")


# -- the launcher (runs inside the server process) ----------------------------------------


def _sniffio_stub() -> types.ModuleType:
    """sniffio's API (what anyio and httpcore use), as the real 1.3 has it."""
    import threading
    from contextvars import ContextVar

    stub = types.ModuleType("sniffio")

    class AsyncLibraryNotFoundError(RuntimeError):
        """sniffio's: no async library could be detected."""

    cvar: ContextVar[str | None] = ContextVar("current_async_library_cvar", default=None)
    local = threading.local()

    def current_async_library() -> str:
        value = getattr(local, "name", None) or cvar.get()
        if value is not None:
            return value
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise AsyncLibraryNotFoundError(
                "unknown async library, or not in async context") from None
        return "asyncio"

    stub.AsyncLibraryNotFoundError = AsyncLibraryNotFoundError  # type: ignore[attr-defined]
    stub.current_async_library_cvar = cvar  # type: ignore[attr-defined]
    stub.thread_local = local  # type: ignore[attr-defined]
    stub.current_async_library = current_async_library  # type: ignore[attr-defined]
    return stub


def apply(variants: set[str]) -> None:
    if "sniffio" in variants and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = _sniffio_stub()
    if "inspectcache" in variants:
        import connexion.decorators.parameter as parameter
        import connexion.security as security
        import connexion.utils as utils

        cached = functools.lru_cache(maxsize=None)(utils.inspect_function_arguments)
        for module in (utils, parameter, security):
            module.inspect_function_arguments = cached
    if "executor" in variants:
        import extauth._threads
        import extauth.audit
        import extauth.links
        import extauth.refresh

        async def off_loop(fn: Any, *args: Any) -> Any:
            ctx = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, functools.partial(ctx.run, fn, *args))

        for module in (extauth._threads, extauth.links, extauth.audit, extauth.refresh):
            module.off_loop = off_loop  # type: ignore[attr-defined]
    import uvicorn

    real_run = uvicorn.run

    def run(*args: Any, **kwargs: Any) -> Any:
        if "nolog" in variants:
            kwargs["access_log"] = False
        if "gcfreeze" in variants:
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)
        return real_run(*args, **kwargs)

    uvicorn.run = run


def serve(variants: str, argv: list[str]) -> None:
    chosen = set(variants.split(",")) - {"baseline"}
    if "all" in chosen:
        chosen = set(VARIANTS) - {"baseline", "all"}
    apply(chosen)
    from extauth.cli import main

    sys.argv = ["extauth", *argv]
    main()


# -- the driver ---------------------------------------------------------------------------


def drive(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.run import API, Bench, Load, Provider, Server, free_port, seed, write_config

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = cpus[0], (cpus[1] if len(cpus) > 1 else cpus[0])
    os.sched_setaffinity(0, {load_cpu})
    tmp = Path(tempfile.mkdtemp(prefix="extauth-whatif-"))
    provider = Provider(tmp, load_cpu)
    results: dict[str, Any] = {"settings": vars(args), "scenario_1": {}, "scenario_3": {}}
    t0 = time.monotonic()
    try:
        config = tmp / "extauth.yaml"
        write_config(config, provider.url)
        db = tmp / "small.db"
        tokens = seed(db)
        bench = Bench(tmp, load_cpu, args.duration, args.warmup, args.connections)
        loads = {
            1: Load([("GET", API, {"Coder-Session-Token": tokens["list"]}, None)]),
            3: Load([("GET", f"{API}/fake", {"Coder-Session-Token": tokens["linked"]}, None)]),
        }
        plan = {1: list(VARIANTS), 3: ["baseline", "sniffio"]}
        for scenario, variants in plan.items():
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            servers: dict[str, Server] = {}
            try:
                for v in variants:
                    port = free_port()
                    servers[v] = Server(
                        v, [sys.executable, "-m", "benchmarks.whatif", "--serve", v, "--",
                            "serve", "--db", str(db), "--config", str(config),
                            "--port", str(port)],
                        port, tmp / f"{v}.log", server_cpu)
                    servers[v].start()  # stopped below even if a later one fails
                print(f"\n== scenario {scenario}")
                for _ in range(args.rounds):
                    for v in variants:
                        r = bench.measure(servers[v].port, loads[scenario])
                        runs[v].append(r)
                        print(f"  {v:<13}{r['rps']:8.1f} req/s  p50 {r['p50_us'] / 1000:7.2f} ms"
                              f"  p99 {r['p99_us'] / 1000:7.2f} ms  errors {r['errors']}",
                              flush=True)
            finally:
                for s in servers.values():
                    s.stop()
            base = statistics.median(r["rps"] for r in runs["baseline"])
            out = {}
            for v, rs in runs.items():
                rps = statistics.median(r["rps"] for r in rs)
                out[v] = {"rps": round(rps, 1),
                          "p50_ms": round(statistics.median(r["p50_us"] for r in rs) / 1000, 2),
                          "p99_ms": round(statistics.median(r["p99_us"] for r in rs) / 1000, 2),
                          "errors": sum(r["errors"] for r in rs),
                          "gain_vs_baseline": round(rps / base - 1, 3),
                          "runs_rps": [round(r["rps"], 1) for r in rs]}
            results[f"scenario_{scenario}"] = out
            print(f"-- scenario {scenario}: median req/s and gain over baseline")
            for v, o in out.items():
                print(f"  {v:<13}{o['rps']:8.1f} req/s  {o['gain_vs_baseline']:+7.1%}  "
                      f"p50 {o['p50_ms']:.2f} ms  p99 {o['p99_ms']:.2f} ms  runs {o['runs_rps']}")
    finally:
        provider.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["total_s"] = round(time.monotonic() - t0, 1)
    print(f"\nTotal {results['total_s']:.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.whatif",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    results = drive(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
