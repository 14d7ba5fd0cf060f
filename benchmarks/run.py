"""Benchmark extauth against two references doing the same work.

    .venv/bin/python -m benchmarks.run [--duration S] [--connections N]
                                       [--scenarios 1,2,...] [--json out.json]

The references: ``benchmarks/reference_app.py`` reuses extauth's domain
(store, sessions, links) under plain Starlette, so extauth/reference is the
cost of the OpenAPI layer; ``benchmarks/bare_app.py`` shares no code with
extauth (Starlette, sqlite3 or psycopg, aiohttp), so extauth/bare is the
cost of extauth's whole stack. Everything runs on 127.0.0.1: a temp dir with
seeded SQLite files (and, for the PostgreSQL scenarios, a PostgreSQL server
of the run's own), a fake OAuth provider answering in a fixed 20 ms
(``benchmarks/fake_provider.py``), the servers as subprocesses pinned to the
first CPU, and ``wrk`` pinned to the second. Every load run is bounded in
time (and, for the RSS check, in requests) and stops by itself. This is a
measurement, never a pass/fail test: it always exits 0 once it has run, and
the targets it prints are informational. See ``benchmarks/README.md``.

Scenarios (numbers for ``--scenarios``):

    1  list, 3 links, valid token (each validated at the fake provider, 20 ms)
    2  get by id, no link (no provider call)
    3  get by id, linked: validated at the fake provider (20 ms); also at -c1
    4  device start + exchange of the code it gave, at the fake provider
    5  401: a well-formed token with a wrong secret
    6  list on 100,000 users / 1,000,000 links (compared with 1)
    7  no blocking in the event loop: list while slow (2 s) provider calls are in flight
    8  RSS growth: a fresh extauth, RSS after 10,000 and after 100,000 list requests
    9  list of 3 links vs one validated get by id, extauth only, one connection
    10 the token hand-off on a valid link (an agent token), against scenario 3's get by
       id on the same link
    11 1,000 listen requests of the hand-off held open (extauth only): list throughput
       with and without them, RSS, and the time from each link to its listener's answer
    12 list, no links (no provider call)
    13 PostgreSQL: scenarios 1, 2 and 12 with every server on one PostgreSQL database
    14 PostgreSQL: list throughput of two extauth instances (processes, ports) on one
       database against one instance (scenario 1's list, the provider's verdicts
       reused for extauth's default 5 s), with the CPU time each process used

Start-up time (process start to the first 200 on /healthz) is measured at
every server start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.callers import Listeners, SlowCalls
from benchmarks.fixture import (
    API,
    HANDOFF,
    LINKED,
    PROVIDER_DELAY,
    ROOT,
    SLOW_DELAY,
    db_counts,
    free_port,
    seed,
    write_config,
)
from benchmarks.report import (
    log,
    machine,
    mb,
    ms,
    ratio,
    ratios,
    ratios_text,
    seconds,
    source_fingerprint,
    table,
    targets,
)
from benchmarks.servers import Postgres, Provider, Server, get
from benchmarks.wrk import Bench, Load, summarize
from extauth import sessions
from extauth.store import Store, open_store, utcnow

__all__ = ["API", "HANDOFF", "LINKED", "ROOT", "Bench", "Load", "Provider", "Server",
           "free_port", "main", "seed", "summarize", "write_config"]

ALL_SCENARIOS = tuple(range(1, 15))
# The servers of a comparison, in the order each round runs them.
SERVERS = ("bare", "reference", "extauth")
TITLES: dict[str | int, str] = {
    1: "list, 3 links, valid token, validated at the provider (20 ms)",
    2: "get by id, no link",
    3: "get by id, linked, validated at the provider (20 ms)",
    "3c1": "get by id, linked, validated at the provider (20 ms), 1 connection",
    4: "device start + exchange of its code at the provider (20 ms each)",
    5: "401: well-formed token, wrong secret",
    6: "list, 3 links, on 100,000 users / 1,000,000 links",
    7: "list while slow provider calls (2 s) are in flight (extauth only)",
    8: "RSS growth on scenario 1 (fresh extauth)",
    9: "list of 3 links vs one validated get by id, at the provider (20 ms), 1 connection",
    10: "token hand-off, valid link, validated at the provider (20 ms)",
    11: "hand-off listeners held open: list, RSS, link-to-answer (extauth only)",
    12: "list, no links",
    "1pg": "PostgreSQL: list, 3 links, validated at the provider (20 ms)",
    "2pg": "PostgreSQL: get by id, no link",
    "12pg": "PostgreSQL: list, no links",
    14: "PostgreSQL: list, 3 links, verdicts reused (5 s): two extauth instances vs one",
}


def standard_loads(tokens: dict[str, str]) -> dict[int, Load]:
    """What wrk sends in each scenario, for the seeded users' tokens."""

    def hdr(name: str) -> dict[str, str]:
        return {"Coder-Session-Token": tokens[name]}

    device = f"{API}/fake/device"
    return {
        1: Load([("GET", API, hdr("list"), None)]),
        2: Load([("GET", f"{API}/fake", hdr("nolink"), None)]),
        3: Load([("GET", f"{API}/fake", hdr("linked"), None)]),
        # Device codes are bound to whoever started the flow: each one a start
        # answered is exchanged next, by the same user.
        4: Load([("GET", device, hdr("device"), None)], expected=(200, 204),
                exchange=(device, {**hdr("device"), "Content-Type": "application/json"})),
        5: Load([("GET", API, hdr("bad"), None)], expected=(401,)),
        10: Load([("GET", f"{HANDOFF}?id=fake&match=", hdr("agent"), None)]),
        12: Load([("GET", API, hdr("nolink"), None)]),
    }


# -- the run --------------------------------------------------------------------------------------


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        cpus = sorted(os.sched_getaffinity(0))
        self.server_cpu = cpus[0]
        self.load_cpu = cpus[1] if len(cpus) > 1 else cpus[0]
        # This process (the slow callers, RSS reads) stays off the servers' CPU.
        os.sched_setaffinity(0, {self.load_cpu})
        # Scenario 11 holds 1,000 connections open, here and in the server (a child,
        # which inherits the limit).
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
        self.tmp = Path(tempfile.mkdtemp(prefix="extauth-bench-"))
        self.bench = Bench(self.tmp, self.load_cpu, args.duration, args.warmup, args.connections)
        self.results: dict[str, Any] = {
            "command": " ".join([".venv/bin/python -m benchmarks.run", *sys.argv[1:]]),
            "settings": {
                "duration_s": args.duration, "warmup_s": args.warmup,
                "connections": args.connections, "rounds": args.rounds,
                "wrk_threads": 1, "server_cpu": self.server_cpu, "load_cpu": self.load_cpu,
                "provider_delay_s": PROVIDER_DELAY, "slow_provider_delay_s": SLOW_DELAY,
            },
            "machine": machine(),
            "startup_s": {name: [] for name in SERVERS},
            "scenarios": {},
        }
        self.servers: list[Server] = []
        self.provider: Provider | None = None
        self.postgres: Postgres | None = None

    # servers

    def server(self, kind: str, db: Path | str, config: Path,
               env: dict[str, str] | None = None, cpu: int | None = -1) -> Server:
        """Start ``kind`` (extauth, reference or bare) on ``db``, pinned to ``cpu``
        (-1: the servers' CPU; None: not pinned)."""
        port = free_port()
        where = ["--db", str(db), "--config", str(config), "--port", str(port)]
        if kind == "extauth":
            # Without an access log, like the references: the same work on every side.
            args = [sys.executable, "-m", "extauth.cli", "serve", *where, "--no-access-log"]
        else:
            args = [sys.executable, "-m", f"benchmarks.{kind}_app", *where]
        srv = Server(kind, args, port, self.tmp / f"{kind}-{port}.log",
                     self.server_cpu if cpu == -1 else cpu, env=env)
        self.servers.append(srv)
        srv.start()
        self.results["startup_s"].setdefault(kind, []).append(round(srv.startup_s, 3))
        log(f"  started {kind} (pid {srv.pid}, port {port}) in {srv.startup_s:.2f} s, "
            f"RSS {mb(srv.rss_kb())} MB")
        return srv

    def stop(self, *servers: Server) -> None:
        for s in servers:
            s.stop()

    # one comparison

    def compare(self, key: str | int, pair: dict[str, Server], load: Load,
                connections: int | None = None, rounds: int | None = None,
                calls_per_request: bool = False, check: tuple[str, str, dict[str, str],
                                                              str | None] | None = None,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
        title = TITLES[key]
        conns = connections or self.args.connections
        log(f"\n== Scenario {key}: {title}  (-t1 -c{conns}, {self.args.duration:g} s "
            f"x {rounds or self.args.rounds} rounds, warm-up {self.args.warmup:g} s)")
        entry: dict[str, Any] = {"title": title, "connections": conns, "servers": {}}
        if check is not None:
            entry["same_answer"] = self.same_answer(pair, check)
        for name, srv in pair.items():
            entry["servers"][name] = {"name": name, "runs": [], "rss_before_kb": srv.rss_kb()}
        for _ in range(rounds or self.args.rounds):
            for name, srv in pair.items():
                run = self.measured(name, srv.port, load, conns, calls_per_request)
                entry["servers"][name]["runs"].append(run)
        for name, srv in pair.items():
            entry["servers"][name]["rss_after_kb"] = srv.rss_kb()
            self.summarize_server(entry["servers"][name])
        if "extauth" in pair and "reference" in pair:
            entry["ratio"] = ratios(entry["servers"]["extauth"]["median"],
                                    entry["servers"]["reference"]["median"])
        if "extauth" in pair and "bare" in pair:
            entry["ratio_bare"] = ratios(entry["servers"]["extauth"]["median"],
                                         entry["servers"]["bare"]["median"])
        if extra:
            entry.update(extra)
        self.results["scenarios"][str(key)] = entry
        self.print_entry(key, entry)
        return entry

    def measured(self, name: str, port: int, load: Load, conns: int,
                 calls_per_request: bool) -> dict[str, Any]:
        """One measured run (after a warm-up), with the provider's calls per
        request counted when asked."""
        if self.provider is None or not calls_per_request:
            run = self.bench.measure(port, load, conns)
        else:
            if self.args.warmup > 0:
                self.bench.wrk(port, load, self.args.warmup, conns)
            self.provider.reset()
            run = self.bench.wrk(port, load, self.args.duration, conns)
            n = sum(self.provider.stats().values())
            run["provider_calls"] = n
            run["provider_calls_per_request"] = n / run["requests"] if run["requests"] else 0.0
        log(f"  {name:<10} {run['rps']:8.1f} req/s  p50 {ms(run['p50_us'])} ms  "
            f"p99 {ms(run['p99_us'])} ms  errors {run['errors']}"
            + (f"  provider calls/request {run['provider_calls_per_request']:.3f}"
               if "provider_calls" in run else ""))
        return run

    @staticmethod
    def summarize_server(server: dict[str, Any]) -> None:
        server["median"] = summarize(server["runs"])
        if "provider_calls" in server["runs"][0]:
            server["median"]["provider_calls_per_request"] = statistics.median(
                r["provider_calls_per_request"] for r in server["runs"])

    def list_vs_get(self, srv: Server, loads: dict[str, Load]) -> None:
        """Scenario 9: extauth's list of three links, each validated at the 20 ms
        provider, against one validated get by id, alternately at one connection
        (no queue; the list's validations run at once)."""
        key = 9
        log(f"\n== Scenario {key}: {TITLES[key]}  (-t1 -c1, {self.args.duration:g} s "
            f"x {self.args.rounds} rounds, warm-up {self.args.warmup:g} s)")
        entry: dict[str, Any] = {"title": TITLES[key], "connections": 1,
                                 "servers": {name: {"name": name, "runs": []} for name in loads}}
        for _ in range(self.args.rounds):
            for name, load in loads.items():
                entry["servers"][name]["runs"].append(
                    self.measured(name, srv.port, load, 1, calls_per_request=True))
        for server in entry["servers"].values():
            self.summarize_server(server)
        entry["list_over_get"] = ratios(entry["servers"]["list"]["median"],
                                        entry["servers"]["get"]["median"])
        self.results["scenarios"][str(key)] = entry
        log(f"-- {key}: {TITLES[key]}")
        log(table(list(entry["servers"].values())))
        log(f"  list/get: {ratios_text(entry['list_over_get'])}")

    def provider_own(self) -> None:
        """The fake provider's own latency for the validation call, measured the same
        way (wrk, one connection): what scenario 3's overhead is counted from."""
        if self.provider is None:
            return
        load = Load([("GET", "/user", {"Authorization": "Bearer gho_bench_linked_fake",
                                       "Accept": "application/json"}, None)])
        runs = [self.bench.measure(self.provider.port, load, 1) for _ in range(self.args.rounds)]
        own = summarize(runs)
        self.results["scenarios"]["3c1"]["provider_own"] = {"runs": runs, "median": own}
        log(f"  provider alone (GET /user, -c1): p50 {ms(own['p50_us'])} ms  "
            f"p99 {ms(own['p99_us'])} ms")

    def print_entry(self, key: str | int, entry: dict[str, Any]) -> None:
        order = [n for n in SERVERS if n in entry["servers"]]
        log(f"-- {key}: {entry['title']} (median of {len(entry['servers'][order[0]]['runs'])} "
            f"runs, -c{entry['connections']})")
        log(table([entry["servers"][n] for n in order]))
        for name, key_ in (("reference", "ratio"), ("bare", "ratio_bare")):
            if key_ in entry:
                r = entry[key_]
                log(f"  extauth/{name}: throughput {r['throughput']:.2f}, "
                    f"p99 {r['p99']:.2f}x, p50 {r['p50']:.2f}x")
        if entry.get("same_answer") is False:
            log("  WARNING: extauth and the reference answered differently (see JSON)")

    def same_answer(self, pair: dict[str, Server],
                    req: tuple[str, str, dict[str, str], str | None]) -> bool:
        method, path, headers, body = req
        answers = {}
        for name, srv in pair.items():
            status, raw = get(srv.port, path, headers, method,
                              body.encode() if body is not None else None)
            answers[name] = (status, raw)
        values = list(answers.values())
        same = all(v == values[0] for v in values)
        if not same:
            self.results.setdefault("answer_mismatches", []).append(
                {"request": f"{method} {path}",
                 **{k: [v[0], v[1].decode(errors="replace")] for k, v in answers.items()}})
        return same

    # the whole thing

    def run(self) -> None:
        args = self.args
        wanted = set(args.scenarios)
        t_start = time.monotonic()
        log(f"extauth benchmarks: temp dir {self.tmp}; servers on CPU {self.server_cpu}, "
            f"wrk/provider/runner on CPU {self.load_cpu}")
        self.provider = Provider(self.tmp, self.load_cpu)
        config = self.tmp / "extauth.yaml"
        write_config(config, self.provider.url)
        small = self.tmp / "small.db"
        tokens = seed(small)
        self.results["fixture"] = {"small": db_counts(small)}
        log(f"  seeded {small.name}: {self.results['fixture']['small']}")

        loads = standard_loads(tokens)
        # Each scenario's first request, sent to every server: the answers must match.
        checks = {k: v.requests[0] for k, v in loads.items() if k != 4}

        if wanted & {1, 2, 3, 4, 5, 7, 9, 10, 12}:
            log("\nStarting servers on the 10-user database")
            trio = {name: self.server(name, small, config) for name in SERVERS}
            for key in (1, 12, 2, 3, 4, 5):
                if key not in wanted:
                    continue
                self.compare(key, trio, loads[key], check=checks.get(key),
                             calls_per_request=key in (1, 2, 3, 4))
                if key == 3:
                    self.compare("3c1", trio, loads[3], connections=1, calls_per_request=True)
                    self.provider_own()
            if 10 in wanted:
                self.handoff(trio, loads[10], loads[3])
            if 7 in wanted:
                self.no_blocking(trio["extauth"], loads[1], tokens["slow"])
            if 9 in wanted:
                self.list_vs_get(trio["extauth"], {"list": loads[1], "get": loads[3]})
            self.stop(*trio.values())

        if 6 in wanted:
            big = self.tmp / "big.db"
            log(f"\nSeeding {big.name}: {args.big_users:,} users, {args.big_links:,} links")
            t0 = time.monotonic()
            big_tokens = seed(big, args.big_users, args.big_links)
            seed_s = time.monotonic() - t0
            self.results["fixture"]["big"] = {**db_counts(big), "seed_s": round(seed_s, 1),
                                              "file_mb": round(big.stat().st_size / 2**20, 1)}
            log(f"  {self.results['fixture']['big']}")
            trio = {name: self.server(name, big, config) for name in SERVERS}
            load = Load([("GET", API, {"Coder-Session-Token": big_tokens["list"]}, None)])
            entry = self.compare(6, trio, load, check=load.requests[0], calls_per_request=True)
            base = self.results["scenarios"].get("1")
            if base is not None:
                entry["vs_10_users"] = {
                    name: {"p50_ratio": ratio(entry["servers"][name]["median"]["p50_us"],
                                              base["servers"][name]["median"]["p50_us"]),
                           "rps_ratio": ratio(entry["servers"][name]["median"]["rps"],
                                              base["servers"][name]["median"]["rps"])}
                    for name in trio}
                log("  vs scenario 1 (10 users): p50 x" + ", ".join(
                    f" {n} {v['p50_ratio']:.2f}" for n, v in entry["vs_10_users"].items()))
            self.stop(*trio.values())

        if 8 in wanted:
            self.rss_growth(small, config, loads[1])

        if 11 in wanted:
            self.listeners(config)

        if wanted & {13, 14}:
            from benchmarks import on_postgres

            if 13 in wanted:
                on_postgres.same_scenarios(self, config)
            if 14 in wanted:
                on_postgres.two_instances(self, config)

        self.provider.stop()
        self.results["machine"]["loadavg_end"] = os.getloadavg()
        end = source_fingerprint()
        self.results["machine"]["source_fingerprint_end"] = end
        if end != self.results["machine"]["source_fingerprint_start"]:
            log("\nWARNING: extauth's sources changed during the run: servers started at "
                "different times ran different code")
        self.results["total_s"] = round(time.monotonic() - t_start, 1)
        self.results["wrk_runs"] = self.bench.wrk_runs
        self.results["targets"] = targets(self.results)
        self.print_summary()

    def no_blocking(self, srv: Server, load: Load, token: str) -> None:
        key = 7
        n = self.args.slow_calls
        log(f"\n== Scenario 7: {TITLES[key]}  ({n} slow calls in flight vs none, "
            f"{self.args.duration:g} s x {self.args.rounds} rounds each)")
        entry: dict[str, Any] = {"title": TITLES[key], "connections": self.args.connections,
                                 "servers": {}, "slow_calls": []}
        runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        rss_before = srv.rss_kb()
        for _ in range(self.args.rounds):
            run = self.bench.measure(srv.port, load)
            runs["without"].append(run)
            log(f"  without    {run['rps']:8.1f} req/s  p50 {ms(run['p50_us'])} ms  "
                f"p99 {ms(run['p99_us'])} ms  errors {run['errors']}")
            with SlowCalls(srv.port, token, n) as slow:
                run = self.bench.measure(srv.port, load)
            runs["with"].append(run)
            entry["slow_calls"].append(slow.summary())
            log(f"  with {n} slow {run['rps']:8.1f} req/s  p50 {ms(run['p50_us'])} ms  "
                f"p99 {ms(run['p99_us'])} ms  errors {run['errors']}  "
                f"slow calls: {slow.summary()}")
        for cond, rs in runs.items():
            entry["servers"][f"extauth, {cond} slow calls"] = {
                "name": f"{cond} slow", "runs": rs, "median": summarize(rs),
                "rss_before_kb": rss_before, "rss_after_kb": srv.rss_kb()}
        entry["with_over_without"] = ratios(
            entry["servers"]["extauth, with slow calls"]["median"],
            entry["servers"]["extauth, without slow calls"]["median"])
        self.results["scenarios"][str(key)] = entry
        log(f"-- 7: {TITLES[key]}")
        log(table(list(entry["servers"].values())))
        log(f"  with/without: {ratios_text(entry['with_over_without'])}")

    def handoff(self, pair: dict[str, Server], load: Load, get_by_id: Load) -> None:
        """Scenario 10, and the same link read by get by id (scenario 3's load) on the
        same extauth in the same rounds."""
        entry = self.compare(10, pair, load, check=load.requests[0], calls_per_request=True)
        base = self.results["scenarios"].get("3")
        if base is None:
            runs = [self.bench.measure(pair["extauth"].port, get_by_id)
                    for _ in range(self.args.rounds)]
            get_rps = summarize(runs)["rps"]
        else:
            get_rps = base["servers"]["extauth"]["median"]["rps"]
        entry["get_by_id_rps"] = get_rps
        entry["vs_get_by_id"] = ratio(entry["servers"]["extauth"]["median"]["rps"], get_rps)
        log(f"  extauth hand-off / get by id on the same link: {entry['vs_get_by_id']:.2f}")

    def listeners(self, config: Path) -> None:
        """Scenario 11: N listen requests held open on a fresh extauth; list throughput
        without and with them, RSS, and how soon each listener answers once its link
        appears: half linked through extauth (the device exchange; it wakes its own
        waiters at once), half written by another process (this one, into the same
        file; extauth's watcher looks once per second)."""
        key = 11
        n, hold = self.args.listeners, self.args.listen_hold
        log(f"\n== Scenario {key}: {TITLES[key]}  ({n} listeners held {hold:g} s)")
        db = self.tmp / "listen.db"
        tokens = seed(db)
        store = open_store(db)
        people = []
        for i in range(n):
            user = store.create_user(f"listener{i:04d}")
            people.append((user, sessions.create_token(store, user),
                           sessions.create_agent_token(store, user, "bench")))
        srv = self.server("extauth", db, config,
                          env={"EXTAUTH_LISTEN_SECONDS": str(hold + 120)})
        load = Load([("GET", API, {"Coder-Session-Token": tokens["list"]}, None)])
        entry: dict[str, Any] = {"title": TITLES[key], "listeners": n, "hold_s": hold,
                                 "connections": self.args.connections, "servers": {},
                                 "rss_kb": {"start": srv.rss_kb()}}
        without = [self.bench.measure(srv.port, load) for _ in range(self.args.rounds)]
        entry["rss_kb"]["before_listeners"] = srv.rss_kb()
        crowd = Listeners(srv.port, [agent for _, _, agent in people])
        try:
            opened = crowd.open()
            log(f"  {n} listeners sent in {opened:.1f} s")
            held_since = time.monotonic()
            time.sleep(2.0)  # let the server take them all in before measuring
            entry["rss_kb"]["with_listeners"] = srv.rss_kb()
            with_them = [self.bench.measure(srv.port, load) for _ in range(self.args.rounds)]
            entry["rss_kb"]["after_list_runs"] = srv.rss_kb()
            time.sleep(max(0.0, hold - (time.monotonic() - held_since)))
            # Nothing may answer before its link appears (a 408 would be early).
            entry["answered_before_any_link"] = len(crowd.answers)
            linked_at = self._link_all(srv.port, store, people)
            crowd.wait(timeout=60)
        finally:
            crowd.close()
            store.close()
        entry["rss_kb"]["after_answers"] = srv.rss_kb()
        srv.stop()
        rss = entry["rss_kb"]
        for name, runs, before, after in (
                ("without listeners", without, rss["start"], rss["before_listeners"]),
                (f"with {n} listeners", with_them, rss["with_listeners"],
                 rss["after_list_runs"])):
            entry["servers"][name] = {"name": name, "runs": runs, "median": summarize(runs),
                                      "rss_before_kb": before, "rss_after_kb": after}
        w = entry["servers"][f"with {n} listeners"]["median"]
        wo = entry["servers"]["without listeners"]["median"]
        entry["with_over_without"] = {"throughput": ratio(w["rps"], wo["rps"]),
                                      "p99": ratio(w["p99_us"], wo["p99_us"])}
        entry["rss_growth_mb"] = (rss["with_listeners"] - rss["before_listeners"]) / 1024
        for how, indexes in linked_at.items():
            delays = sorted(max(0.0, crowd.answers[i][0] - at) for i, at in indexes.items()
                            if i in crowd.answers and crowd.answers[i][1] == 200
                            and crowd.answers[i][2])
            entry[f"link_to_answer_{how}"] = {
                "links": len(indexes), "answered_with_token": len(delays),
                "p50_s": statistics.median(delays) if delays else None,
                "p99_s": delays[int(len(delays) * 0.99) - 1] if delays else None,
                "max_s": delays[-1] if delays else None,
            }
        self.results["scenarios"][str(key)] = entry
        log(f"-- {key}: {TITLES[key]}")
        log(table(list(entry["servers"].values())))
        r = entry["with_over_without"]
        log(f"  with/without: throughput {r['throughput']:.2f}, p99 {r['p99']:.2f}x; "
            f"RSS {mb(rss['before_listeners'])} -> {mb(rss['with_listeners'])} MB with "
            f"listeners (+{entry['rss_growth_mb']:.1f} MB), {mb(rss['after_answers'])} MB "
            "after their answers")
        for how in linked_at:
            a = entry[f"link_to_answer_{how}"]
            log(f"  linked {how}: {a['answered_with_token']}/{a['links']} answered with the "
                f"token; link to answer p50 {seconds(a['p50_s'])}, p99 {seconds(a['p99_s'])}, "
                f"max {seconds(a['max_s'])}")

    def _link_all(self, port: int, store: Store,
                  people: list[tuple[Any, str, str]]) -> dict[str, dict[int, float]]:
        """Link every listener's user; when each link appeared, by how it was made."""
        half = len(people) // 2
        by_api: dict[int, float] = {}
        codes: dict[int, bytes] = {}
        device = f"{API}/fake/device"

        def start(i: int) -> None:
            # A device code works only for whoever started its flow.
            status, answer = get(port, device, {"Coder-Session-Token": people[i][1]},
                                 timeout=30)
            if status == 200:
                codes[i] = json.dumps({"device_code": json.loads(answer)["device_code"]}).encode()

        def exchange(i: int) -> None:
            status, _ = get(port, device, {"Coder-Session-Token": people[i][1],
                                           "Content-Type": "application/json"},
                            "POST", codes[i], timeout=30)
            if status == 204:
                by_api[i] = time.monotonic()

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(start, range(half)))
            list(pool.map(exchange, [i for i in range(half) if i in codes]))
        by_store: dict[int, float] = {}
        expires = utcnow() + timedelta(days=1)
        for i in range(half, len(people)):
            store.upsert_link(people[i][0].id, "fake", f"gho_listener_{i}", "", expires)
            by_store[i] = time.monotonic()
        return {"through extauth": by_api, "by another process": by_store}

    def rss_growth(self, db: Path, config: Path, load: Load) -> None:
        key = 8
        first, total = self.args.growth_requests
        log(f"\n== Scenario 8: {TITLES[key]}  (RSS after {first:,} and {total:,} requests)")
        srv = self.server("extauth", db, config)
        rss = {"start": srv.rss_kb()}
        # A generous time cap: at 100 req/s it still stops by itself.
        def cap(n: int) -> float:
            return max(30.0, n / 100.0)

        run1 = self.bench.wrk(srv.port, load, cap(first), max_requests=first)
        rss["after_first"] = srv.rss_kb()
        run2 = self.bench.wrk(srv.port, load, cap(total - first), max_requests=total - first)
        rss["after_total"] = srv.rss_kb()
        srv.stop()
        done1, done2 = run1["requests"], run1["requests"] + run2["requests"]
        growth = ratio(rss["after_total"] - rss["after_first"], rss["after_first"])
        entry = {
            "title": TITLES[key], "requests_first": done1, "requests_total": done2,
            "rss_kb": rss, "growth": growth, "runs": [run1, run2],
            "errors": run1["errors"] + run2["errors"],
        }
        self.results["scenarios"][str(key)] = entry
        log(f"-- 8: RSS at start {mb(rss['start'])} MB, after {done1:,} requests "
            f"{mb(rss['after_first'])} MB, after {done2:,} requests {mb(rss['after_total'])} MB "
            f"(growth {growth:+.1%}); {run1['rps']:.0f} / {run2['rps']:.0f} req/s, "
            f"errors {entry['errors']}")

    def print_summary(self) -> None:
        st = self.results["startup_s"]
        log("\n== Start-up (process start to first 200 on /healthz), seconds")
        for name, values in st.items():
            if values:
                log(f"  {name:<10} median {statistics.median(values):.2f}  all {values}")
        log("\n== Headline (medians; req/s and p99 ms; ratios are extauth's over each reference)")
        log(f"  {'scenario':<46}{'bare':>8}{'ref':>8}{'extauth':>9}{'/bare':>7}{'/ref':>7}"
            f"{'p99 bare':>10}{'ref':>7}{'extauth':>9}{'/bare':>7}{'/ref':>7}")
        for key, e in self.results["scenarios"].items():
            if "ratio" not in e and "ratio_bare" not in e:
                continue
            med = {n: e["servers"][n]["median"] for n in SERVERS if n in e["servers"]}
            rb, rr = e.get("ratio_bare", {}), e.get("ratio", {})

            def num(value: float | None, fmt: str) -> str:
                return "-" if value is None else format(value, fmt)

            log(f"  {key + ' ' + e['title'][:40]:<46}"
                + "".join(f"{num(med[n]['rps'] if n in med else None, '.0f'):>{w}}"
                          for n, w in (("bare", 8), ("reference", 8), ("extauth", 9)))
                + f"{num(rb.get('throughput'), '.2f'):>7}{num(rr.get('throughput'), '.2f'):>7}"
                + "".join(f"{ms(med[n]['p99_us']) if n in med else '-':>{w}}"
                          for n, w in (("bare", 10), ("reference", 7), ("extauth", 9)))
                + f"{num(rb.get('p99'), '.2f'):>7}{num(rr.get('p99'), '.2f'):>7}")
        log("\n== Targets (informational; this is a measurement, not a test)")
        for t in self.results["targets"]:
            mark = {True: "met   ", False: "MISSED", None: "n/a   "}[t["met"]]
            log(f"  [{mark}] {t['target']}: {t['value']}")
        log(f"\nTotal {self.results['total_s']:.0f} s, {self.results['wrk_runs']} wrk runs.")

    def cleanup(self) -> None:
        for s in self.servers:
            with contextlib.suppress(Exception):  # best effort on the way out
                s.stop()
        if self.provider is not None:
            self.provider.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log(f"kept {self.tmp}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run [10]")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each run [2]")
    p.add_argument("--connections", type=int, default=50, help="wrk connections [50]")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternating rounds (reference, extauth) per scenario [2]")
    p.add_argument("--scenarios", default=",".join(map(str, ALL_SCENARIOS)),
                   help="comma-separated scenario numbers [1,2,3,4,5,6,7,8,9,10,11]")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--big-users", type=int, default=100_000, help="scenario 6 users [100000]")
    p.add_argument("--big-links", type=int, default=1_000_000, help="scenario 6 links [1000000]")
    p.add_argument("--growth-requests", default="10000,100000",
                   help="scenario 8: RSS after FIRST and TOTAL requests [10000,100000]")
    p.add_argument("--slow-calls", type=int, default=5,
                   help="scenario 7: slow provider calls kept in flight [5]")
    p.add_argument("--listeners", type=int, default=1000,
                   help="scenario 11: listen requests held open [1000]")
    p.add_argument("--listen-hold", type=float, default=30.0, metavar="S",
                   help="scenario 11: seconds they are held before their links appear [30]")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    p.add_argument("--validate-cache", type=float, default=0.0, metavar="S",
                   help="EXTAUTH_VALIDATE_CACHE_SECONDS for both servers [0: validate every time]")
    args = p.parse_args(argv)
    args.scenarios = sorted({int(s) for s in args.scenarios.split(",") if s.strip()})
    bad = set(args.scenarios) - set(ALL_SCENARIOS)
    if bad:
        p.error(f"unknown scenario(s) {sorted(bad)}; choose from {list(ALL_SCENARIOS)}")
    first, total = (int(x) for x in args.growth_requests.split(","))
    if not 0 < first < total:
        p.error("--growth-requests: FIRST must be below TOTAL")
    args.growth_requests = (first, total)
    os.environ["BENCH_VALIDATE_CACHE_SECONDS"] = str(args.validate_cache)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian: apt-get install -y "
                  f"{'wrk' if tool == 'wrk' else 'util-linux'})", file=sys.stderr)
            return 2
    runner = Runner(args)
    try:
        runner.run()
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        runner.cleanup()
        if args.json:
            Path(args.json).write_text(json.dumps(runner.results, indent=2, default=str) + "\n")
            log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
