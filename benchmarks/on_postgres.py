"""The PostgreSQL scenarios: the same requests on PostgreSQL (13), and two extauth
instances on one database against one (14).

PostgreSQL is a server of the run's own, started as the tests start theirs
(``tests/postgres.py``: a new cluster in a temp dir, a free port, an
unprivileged user when run as root, durability off), and stopped at the end.
"""

from __future__ import annotations

import os
import resource
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.fixture import db_counts, seed
from benchmarks.report import log, mb, ms, ratio
from benchmarks.servers import Postgres, Server, cpu_seconds
from benchmarks.wrk import Load, summarize

if TYPE_CHECKING:
    from benchmarks.run import Runner

# extauth's default: how long a provider's verdict on a token is reused.
VERDICT_WINDOW = 5


def _postgres(runner: Runner) -> Postgres:
    """The run's PostgreSQL server, on the load's CPU (with wrk and the provider)."""
    if runner.postgres is None:
        runner.postgres = Postgres(runner.load_cpu)
        log(f"  started PostgreSQL (pid {runner.postgres.pid}) on CPU {runner.load_cpu}")
    return runner.postgres


def _database(runner: Runner, name: str) -> tuple[str, dict[str, str]]:
    """A new schema, seeded like the SQLite file; its URL and the tokens."""
    url = _postgres(runner).database()
    tokens = seed(url)
    runner.results["fixture"][name] = db_counts(url)
    return url, tokens


def same_scenarios(runner: Runner, config: Path) -> None:
    """Scenarios 1, 12 and 2 with the three servers on one PostgreSQL database."""
    from benchmarks.run import SERVERS, standard_loads

    log("\nStarting servers on PostgreSQL (the 10-user fixture)")
    url, tokens = _database(runner, "postgres")
    loads = standard_loads(tokens)
    trio = {name: runner.server(name, url, config) for name in SERVERS}
    try:
        for key, load in (("1pg", loads[1]), ("12pg", loads[12]), ("2pg", loads[2])):
            runner.compare(key, trio, load, check=load.requests[0],
                           calls_per_request=key == "1pg")
    finally:
        runner.stop(*trio.values())


def two_instances(runner: Runner, config: Path) -> None:
    """Scenario 14: scenario 1's list against one extauth on PostgreSQL, then
    against two (separate processes and ports, one database), the load split
    between them by two wrk processes. The provider's verdicts are reused for
    extauth's default window (``EXTAUTH_VALIDATE_CACHE_SECONDS=5``): otherwise
    every list waits for a 20 ms validation, and 50 connections cannot keep
    even one instance busy. Each instance has a CPU of its own (the first on
    the first CPU, in both runs); the database, wrk and the provider run on any
    CPU, and the CPU time each of them used is recorded, to say what limits."""
    from benchmarks.run import TITLES, standard_loads

    key = 14
    args = runner.args
    log(f"\n== Scenario {key}: {TITLES[key]}  (-c{args.connections} in all, "
               f"{args.duration:g} s x {args.rounds} rounds)")
    url, tokens = _database(runner, "postgres_instances")
    load = standard_loads(tokens)[1]
    everywhere = set(range(os.cpu_count() or 1))
    postgres = _postgres(runner)
    postgres.pin(everywhere)
    assert runner.provider is not None
    os.sched_setaffinity(runner.provider.proc.pid, everywhere)
    runner.bench.cpus = ",".join(map(str, sorted(everywhere)))
    # Each instance on a CPU of its own: the threads of one Python process spread
    # over two CPUs pass the GIL back and forth, which cost one instance a quarter
    # of its throughput, measured.
    cpus = sorted(everywhere)
    instances = [runner.server("extauth", url, config, cpu=cpus[i % len(cpus)],
                               env={"EXTAUTH_VALIDATE_CACHE_SECONDS": str(VERDICT_WINDOW)})
                 for i in range(2)]
    entry: dict[str, Any] = {"title": TITLES[key], "connections": args.connections,
                             "cpus": len(everywhere), "servers": {}, "cpu": {}}
    runs: dict[str, list[dict[str, Any]]] = {"one instance": [], "two instances": []}
    rss: list[int] = []
    try:
        for _ in range(args.rounds):
            for name, used in (("one instance", instances[:1]), ("two instances", instances)):
                run = _measure(runner, used, load, postgres)
                runs[name].append(run)
                log(f"  {name:<14}{run['rps']:9.1f} req/s  p50 {ms(run['p50_us'])} ms  "
                           f"p99 {ms(run['p99_us'])} ms  errors {run['errors']}  "
                           f"CPU {_busy(run['cpu'])}")
        rss = [server.rss_kb() for server in instances]
    finally:
        runner.stop(*instances)
        runner.bench.cpus = ""
        postgres.pin({runner.load_cpu})
        os.sched_setaffinity(runner.provider.proc.pid, {runner.load_cpu})
    for name, rs in runs.items():
        entry["servers"][name] = {"name": name, "runs": rs, "median": summarize(rs),
                                  "rss_after_kb": None}
        entry["cpu"][name] = {part: statistics.median(r["cpu"][part] for r in rs)
                              for part in rs[0]["cpu"]}
    one, two = (entry["servers"][n]["median"]["rps"] for n in runs)
    entry["two_over_one"] = ratio(two, one)
    entry["per_cpu_second"] = {name: statistics.median(r["per_cpu_s"] for r in rs)
                               for name, rs in runs.items()}
    # The most a second instance could add here: all the CPUs, at the CPU time
    # one instance's requests took (its own, the database's, wrk's, ...).
    entry["ceiling"] = len(everywhere) / sum(entry["cpu"]["one instance"].values())
    entry["rss_kb"] = rss
    entry["verdict_window_s"] = VERDICT_WINDOW
    entry["limit"] = f"CPUs busy with two instances: {_busy(entry['cpu']['two instances'])}"
    runner.results["scenarios"][str(key)] = entry
    log(f"-- {key}: {TITLES[key]}")
    for name, server in entry["servers"].items():
        m = server["median"]
        log(f"  {name:<14}{m['rps']:9.1f} req/s  p50 {ms(m['p50_us'])} ms  "
                   f"p99 {ms(m['p99_us'])} ms  errors {m['errors']}")
    per_cpu = entry["per_cpu_second"]
    log(f"  two/one: throughput {entry['two_over_one']:.2f}; {entry['limit']}; "
               f"RSS {', '.join(mb(kb) for kb in rss)} MB")
    log(f"  the ceiling on {len(everywhere)} CPUs: {entry['ceiling']:.2f} x one; requests per "
        f"CPU-second of all parts: one {per_cpu['one instance']:.0f}, two "
        f"{per_cpu['two instances']:.0f} "
        f"({ratio(per_cpu['two instances'], per_cpu['one instance']):.2f})")


def _measure(runner: Runner, instances: list[Server], load: Load,
             postgres: Postgres) -> dict[str, Any]:
    """One measured run (after a warm-up) with the connections split between the
    instances; the summed throughput, the worst percentiles, and the CPU time
    each part used per second of the run."""
    bench = runner.bench
    share = max(1, runner.args.connections // len(instances))
    targets = [(s.port, load, share) for s in instances]
    if bench.warmup > 0:
        bench.wrk_at_once(targets, bench.warmup)
    parts = {f"extauth {i + 1}": s.cpu_seconds for i, s in enumerate(instances)}
    parts["postgres"] = postgres.cpu_seconds
    assert runner.provider is not None
    provider_pid = runner.provider.proc.pid
    parts["provider"] = lambda: cpu_seconds(provider_pid)
    parts["wrk"] = _children_cpu
    before = {name: read() for name, read in parts.items()}
    outs = bench.wrk_at_once(targets, bench.duration)
    seconds = max(o["duration_us"] for o in outs) / 1e6
    cpu = {name: (read() - before[name]) / seconds for name, read in parts.items()}
    run: dict[str, Any] = {
        "rps": sum(o["rps"] for o in outs),
        "requests": sum(o["requests"] for o in outs),
        "errors": sum(o["errors"] for o in outs),
        "statuses": {k: sum(o["statuses"].get(k, 0) for o in outs)
                     for k in {k for o in outs for k in o["statuses"]}},
        "each": outs,
        "cpu": cpu,
    }
    # Requests per CPU-second of every part: what the work costs, whether or not
    # the machine had CPUs to spare.
    run["per_cpu_s"] = run["rps"] / sum(cpu.values())
    for metric in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us"):
        run[metric] = max(o[metric] for o in outs)
    return run


def _children_cpu() -> float:
    """CPU time of this process's finished children: the wrk runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _busy(cpu: dict[str, float]) -> str:
    total = sum(cpu.values())
    return ", ".join(f"{name} {value:.2f}" for name, value in cpu.items()) + f" (sum {total:.2f})"
