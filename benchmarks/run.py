"""Benchmark extauth against a plain-Starlette reference doing the same work.

    .venv/bin/python -m benchmarks.run [--duration S] [--connections N]
                                       [--scenarios 1,2,...] [--json out.json]

Everything runs on 127.0.0.1: a temp dir with seeded SQLite files, a fake
OAuth provider answering in a fixed 20 ms (``benchmarks/fake_provider.py``),
``extauth serve`` and ``benchmarks/reference_app.py`` as subprocesses pinned to
the first CPU, and ``wrk`` pinned to the second. Every load run is bounded in
time (and, for the RSS check, in requests) and stops by itself. This is a
measurement, never a pass/fail test: it always exits 0 once it has run, and
the targets it prints are informational. See ``benchmarks/README.md``.

Scenarios (numbers for ``--scenarios``):

    1  list, 3 links, valid token (each validated at the fake provider, 20 ms)
    2  get by id, no link (no provider call)
    3  get by id, linked: validated at the fake provider (20 ms); also at -c1
    4  device start + exchange against the fake provider (alternating)
    5  401: a well-formed token with a wrong secret
    6  list on 100,000 users / 1,000,000 links (compared with 1)
    7  no blocking in the event loop: list while slow (2 s) provider calls are in flight
    8  RSS growth: a fresh extauth, RSS after 10,000 and after 100,000 list requests
    9  list of 3 links vs one validated get by id, extauth only, one connection
    10 the token hand-off on a valid link (an agent token), against scenario 3's get by
       id on the same link
    11 1,000 listen requests of the hand-off held open (extauth only): list throughput
       with and without them, RSS, and the time from each link to its listener's answer

Start-up time (process start to the first 200 on /healthz) is measured at
every server start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from extauth import sessions
from extauth.store import Store, open_store, utcnow

ROOT = Path(__file__).resolve().parent.parent
API = "/api/v2/external-auth"
PROVIDER_DELAY = 0.020
SLOW_DELAY = 2.0
LINKED = ("fake", "fake2", "fake3")
ALL_SCENARIOS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
HANDOFF = "/api/v2/workspaceagents/me/external-auth"
TITLES = {
    1: "list, 3 links, valid token, validated at the provider (20 ms)",
    2: "get by id, no link",
    3: "get by id, linked, validated at the provider (20 ms)",
    "3c1": "get by id, linked, validated at the provider (20 ms), 1 connection",
    4: "device start + exchange (alternating) at the provider (20 ms each)",
    5: "401: well-formed token, wrong secret",
    6: "list, 3 links, on 100,000 users / 1,000,000 links",
    7: "list while slow provider calls (2 s) are in flight (extauth only)",
    8: "RSS growth on scenario 1 (fresh extauth)",
    9: "list of 3 links vs one validated get by id, at the provider (20 ms), 1 connection",
    10: "token hand-off, valid link, validated at the provider (20 ms)",
    11: "hand-off listeners held open: list, RSS, link-to-answer (extauth only)",
}


def log(msg: str = "") -> None:
    print(msg, flush=True)


# -- the fixture ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(path: Path, provider_url: str) -> None:
    """Three linked providers (fake, fake2, fake3) and ``slow``, all at the fake provider."""

    def provider(pid: str, validate: str) -> dict[str, Any]:
        return {
            "id": pid,
            "type": "fake-oauth",
            "client_id": "bench-client",
            "client_secret": "bench-secret-5f3a9c",
            "auth_url": f"{provider_url}/authorize",
            "token_url": f"{provider_url}/token",
            "validate_url": f"{provider_url}{validate}",
            "device_flow": True,
            "device_code_url": f"{provider_url}/device/code",
            "revoke_url": f"{provider_url}/revoke",
            "scopes": ["repo", "read:user"],
        }

    providers = [provider(pid, "/user") for pid in LINKED]
    providers.append(provider("slow", "/slow/user"))
    path.write_text(yaml.safe_dump({"external_auth": providers}))


def seed(db: Path, bulk_users: int = 0, bulk_links: int = 0) -> dict[str, str]:
    """A migrated database with the bench users; returns name -> session token.

    With ``bulk_*``, first fill it with that many users (each with an API key)
    and links in total (counting the bench users' ones), inserted with
    ``executemany`` in one transaction straight through sqlite3.
    """
    store = open_store(db)
    store.migrate()
    bench = {"list": LINKED, "nolink": (), "linked": ("fake",), "device": (), "slow": ("slow",),
             "bad": ()}
    if bulk_users:
        n_bulk = bulk_users - len(bench)
        remaining = bulk_links - sum(len(v) for v in bench.values())
        now = store._ts(utcnow())  # type: ignore[attr-defined]  # SQLite's own format
        expires = store._ts(utcnow() + timedelta(days=30))  # type: ignore[attr-defined]
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO users (id, name, created_at) VALUES (?, ?, ?)",
            ((i, f"user{i:06d}", now) for i in range(1, n_bulk + 1)),
        )
        conn.executemany(
            "INSERT INTO api_keys (id, user_id, secret_hash, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, NULL)",
            ((f"k{i:09d}", i, sessions.hash_secret(f"s{i}"), now) for i in range(1, n_bulk + 1)),
        )
        per_user, extra = divmod(remaining, n_bulk)

        def links() -> Any:
            for i in range(1, n_bulk + 1):
                for k in range(per_user + (1 if i <= extra else 0)):
                    yield (i, f"p{k}", f"gho_{i:06d}_{k}", f"ghr_{i:06d}_{k}", expires, now, now)

        conn.executemany(
            "INSERT INTO external_auth_links (user_id, provider_id, access_token, "
            "refresh_token, expires_at, extra, refresh_failure_reason, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, '{}', '', ?, ?)",
            links(),
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.close()
    tokens: dict[str, str] = {}
    expires_at = utcnow() + timedelta(days=30)
    for name, providers in bench.items():
        user = store.create_user(f"bench-{name}")
        tokens[name] = sessions.create_token(store, user)
        for pid in providers:
            store.upsert_link(user.id, pid, f"gho_bench_{name}_{pid}", f"ghr_bench_{name}_{pid}",
                              expires_at)
    if not bulk_users:  # ten users in all
        for i in range(10 - len(bench)):
            user = store.create_user(f"filler{i}")
            sessions.create_token(store, user)
            store.upsert_link(user.id, "fake", f"gho_filler{i}", "", expires_at)
    # The linked user's agent token: the hand-off reads the same link as scenario 3.
    linked = store.get_user("bench-linked")
    assert linked is not None
    tokens["agent"] = sessions.create_agent_token(store, linked, "bench")
    # A token with a real key id and a wrong secret: the 401 path that reads the DB.
    key_id = tokens["bad"].split("-")[0]
    tokens["bad"] = f"{key_id}-{'x' * sessions.SECRET_LENGTH}"
    store.close()
    return tokens


def db_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("users", "api_keys", "external_auth_links")}
    finally:
        conn.close()


# -- processes --------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EXTAUTH_", "CODER_EXTERNAL_AUTH_", "CODER_GITAUTH_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    # Both servers reuse extauth's Links: by default neither reuses a provider's
    # verdict, so scenario 3 measures a validation per request.
    env["EXTAUTH_VALIDATE_CACHE_SECONDS"] = os.environ.get("BENCH_VALIDATE_CACHE_SECONDS", "0")
    return env


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
        body: bytes | None = None, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):  # the process is gone
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Server:
    name: str
    args: list[str]
    port: int
    logfile: Path
    cpu: int
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0
    env: dict[str, str] | None = None

    def start(self, timeout: float = 30.0) -> Server:
        cmd = ["taskset", "-c", str(self.cpu), *self.args]
        with open(self.logfile, "ab") as out:
            t0 = time.monotonic()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**clean_env(), **(self.env or {})}, cwd=ROOT)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            with contextlib.suppress(OSError):  # not listening yet
                status, _ = get(self.port, "/healthz", timeout=1)
                if status == 200:
                    self.startup_s = time.monotonic() - t0
                    return self
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /healthz in {timeout}s:\n{self.tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Provider:
    """The fake provider subprocess, with its request counters."""

    def __init__(self, tmp: Path, cpu: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logfile = tmp / "provider.log"
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), sys.executable, "-m", "benchmarks.fake_provider",
                 "--port", str(self.port), "--delay", str(PROVIDER_DELAY),
                 "--slow-delay", str(SLOW_DELAY)],
                stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd=ROOT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if get(self.port, "/__stats", timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("the fake provider did not start")

    def reset(self) -> None:
        get(self.port, "/__reset", method="POST")

    def stats(self) -> dict[str, int]:
        counts: dict[str, int] = json.loads(get(self.port, "/__stats")[1])
        return counts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# -- wrk ------------------------------------------------------------------------------------------

LUA = r"""
-- generated by benchmarks/run.py
local reqs = %(requests)s
local expected = %(expected)s
local max_requests = %(max_requests)d
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  idx = 0
  responses = 0
  unexpected = 0
  statuses = {}
  prepared = {}
  for i, r in ipairs(reqs) do
    prepared[i] = wrk.format(r[1], r[2], r[3], r[4])
  end
end

function request()
  idx = idx %% #prepared + 1
  return prepared[idx]
end

function response(status, headers, body)
  responses = responses + 1
  if not expected[status] then unexpected = unexpected + 1 end
  statuses[status] = (statuses[status] or 0) + 1
  if max_requests > 0 and responses == max_requests then
    -- wrk's main thread sleeps for the whole -d: tell run.py, which sends SIGINT.
    io.write("BENCHMAX\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local n_unexpected, n_responses = 0, 0
  local all = {}
  for _, t in ipairs(threads) do
    n_unexpected = n_unexpected + (t:get("unexpected") or 0)
    n_responses = n_responses + (t:get("responses") or 0)
    for k, v in pairs(t:get("statuses") or {}) do all[k] = (all[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(all) do table.insert(parts, string.format('"%%d":%%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%%d,"responses":%%d,"duration_us":%%d,"bytes":%%d,' ..
    '"connect_errors":%%d,"read_errors":%%d,"write_errors":%%d,"http_errors":%%d,' ..
    '"timeouts":%%d,"unexpected_status":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"p999_us":%%d,"max_us":%%d,"mean_us":%%.1f,"statuses":{%%s}}\n',
    summary.requests, n_responses, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, n_unexpected,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, table.concat(parts, ",")))
end
"""


def lua_str(s: str) -> str:
    return json.dumps(s)  # ASCII JSON strings are valid Lua string literals


@dataclass
class Load:
    """What wrk sends: requests (cycled), the statuses that count as success."""

    requests: list[tuple[str, str, dict[str, str], str | None]]
    expected: tuple[int, ...] = (200,)

    def script(self, path: Path, max_requests: int = 0) -> Path:
        reqs = []
        for method, url, headers, body in self.requests:
            hdr = ", ".join(f"[{lua_str(k)}] = {lua_str(v)}" for k, v in headers.items())
            reqs.append(f"{{{lua_str(method)}, {lua_str(url)}, {{{hdr}}}, "
                        f"{lua_str(body) if body is not None else 'nil'}}}")
        text = LUA % {
            "requests": "{" + ", ".join(reqs) + "}",
            "expected": "{" + ", ".join(f"[{s}] = true" for s in self.expected) + "}",
            "max_requests": max_requests,
        }
        path.write_text(text)
        return path


@dataclass
class Bench:
    tmp: Path
    load_cpu: int
    duration: float
    warmup: float
    connections: int
    wrk_runs: int = 0
    wrk_seconds: float = 0.0

    def wrk(self, port: int, load: Load, duration: float, connections: int | None = None,
            max_requests: int = 0) -> dict[str, Any]:
        """One bounded wrk run; its BENCHJSON summary plus req/s."""
        script = load.script(self.tmp / f"load-{self.wrk_runs}.lua", max_requests)
        self.wrk_runs += 1
        secs = max(1, int(round(duration)))
        cmd = ["taskset", "-c", str(self.load_cpu), "wrk", "-t1",
               f"-c{connections or self.connections}", f"-d{secs}s", "--timeout", "10s",
               "-s", str(script), f"http://127.0.0.1:{port}"]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # wrk always stops by itself after -d; this is only a guard against a hang.
        guard = threading.Timer(secs + 60, proc.kill)
        guard.start()
        lines = []
        try:
            assert proc.stdout is not None
            for ln in proc.stdout:
                lines.append(ln)
                if ln.startswith("BENCHMAX"):
                    proc.send_signal(signal.SIGINT)  # wrk then reports and exits
            stderr = proc.stderr.read() if proc.stderr else ""
            proc.wait()
        finally:
            guard.cancel()
        self.wrk_seconds += time.monotonic() - t0
        stdout = "".join(lines)
        line = next((ln for ln in lines if ln.startswith("BENCHJSON ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}):\n{stdout}\n{stderr}")
        out: dict[str, Any] = json.loads(line.removeprefix("BENCHJSON "))
        out["rps"] = out["requests"] / (out["duration_us"] / 1e6) if out["duration_us"] else 0.0
        out["errors"] = (out["unexpected_status"] + out["connect_errors"] + out["read_errors"]
                         + out["write_errors"] + out["timeouts"])
        return out

    def measure(self, port: int, load: Load, connections: int | None = None) -> dict[str, Any]:
        if self.warmup > 0:
            self.wrk(port, load, self.warmup, connections)
        return self.wrk(port, load, self.duration, connections)


METRICS = ("rps", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    med = {m: statistics.median(r[m] for r in runs) for m in METRICS}
    med["errors"] = sum(r["errors"] for r in runs)
    med["requests"] = sum(r["requests"] for r in runs)
    statuses: dict[str, int] = {}
    for r in runs:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    med["statuses"] = statuses
    return med


# -- slow calls in flight (scenario 7) ------------------------------------------------------------


class SlowCalls:
    """``n`` threads, each looping on GET /external-auth/slow (the provider takes 2 s)."""

    def __init__(self, port: int, token: str, n: int) -> None:
        self.port, self.token, self.n = port, token, n
        self.stop_event = threading.Event()
        self.done: list[tuple[int, float]] = []
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                status, _ = get(self.port, f"{API}/slow", {"Coder-Session-Token": self.token},
                                timeout=30)
            except OSError:
                status = 0
            self.done.append((status, time.monotonic() - t0))

    def __enter__(self) -> SlowCalls:
        for t in self.threads:
            t.start()
        time.sleep(0.5)  # let them reach the provider
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=SLOW_DELAY + 10)

    def summary(self) -> dict[str, Any]:
        times = sorted(d for _, d in self.done)
        return {
            "concurrent": self.n,
            "completed": len(self.done),
            "ok": sum(1 for s, _ in self.done if s == 200),
            "median_s": statistics.median(times) if times else None,
            "max_s": times[-1] if times else None,
        }


# -- listeners held open (scenario 11) ------------------------------------------------------------


class Listeners:
    """Listen requests of the hand-off, one connection each, from an event loop in a
    thread of this process; ``answers[i]`` = (when, status, whether it held a token)."""

    def __init__(self, port: int, tokens: list[str]) -> None:
        self.port, self.tokens = port, tokens
        self.answers: dict[int, tuple[float, int, bool]] = {}
        self.sent = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.futures: list[Any] = []

    def open(self, timeout: float = 60.0) -> float:
        """Send them all; the seconds it took."""
        t0 = time.monotonic()
        self.thread.start()
        self.futures = [asyncio.run_coroutine_threadsafe(self._one(i, token), self.loop)
                        for i, token in enumerate(self.tokens)]
        while self.sent < len(self.tokens):
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"only {self.sent} of {len(self.tokens)} listeners sent")
            time.sleep(0.05)
        return time.monotonic() - t0

    async def _one(self, i: int, token: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(f"GET {HANDOFF}?id=fake&match=&listen=true HTTP/1.1\r\n"
                         f"Host: bench\r\nCoder-Session-Token: {token}\r\n\r\n".encode())
            await writer.drain()
            self.sent += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            body = await reader.readexactly(int(length.group(1))) if length else b""
            self.answers[i] = (time.monotonic(), int(head.split(b" ", 2)[1]),
                               b'"access_token": ""' not in body and b"access_token" in body)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.answers[i] = (time.monotonic(), 0, False)
        finally:
            writer.close()

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for future in self.futures:
            with contextlib.suppress(Exception):  # counted as unanswered below
                future.result(timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for future in self.futures:
            future.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


# -- machine --------------------------------------------------------------------------------------


def source_fingerprint() -> str:
    """A hash of what the servers run (extauth/, handlers/, openapi.yaml, the reference)."""
    h = hashlib.sha256()
    files = sorted([*ROOT.glob("extauth/**/*.py"), *ROOT.glob("handlers/*.py"),
                    ROOT / "openapi.yaml", ROOT / "benchmarks" / "reference_app.py"])
    for f in files:
        with contextlib.suppress(OSError):  # removed while hashing
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):  # no /proc: the description says less
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    versions: dict[str, str | None] = {}
    for pkg in ("connexion", "starlette", "uvicorn", "sqlite-utils", "httpx", "anyio", "uvloop",
                "httptools", "jsonschema"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    # The tree that was measured: files changed since that commit, if any.
    dirty = subprocess.run(["git", "status", "--short", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=ROOT).stdout.split("\n")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": versions,
        "wrk": wrk[0] if wrk else "",
        "git_commit": commit,
        "source_fingerprint_start": source_fingerprint(),
        "git_changed_files": [ln.strip() for ln in dirty if ln.strip()],
        "loadavg_start": os.getloadavg(),
    }


# -- output ---------------------------------------------------------------------------------------


def ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def mb(kb: int | None) -> str:
    return "-" if not kb else f"{kb / 1024:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    width = max([11, *(len(r["name"]) + 1 for r in rows)])
    head = (f"  {'server':<{width}}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
            f"{'errors':>8}   {'RSS before -> after MB':<22}")
    lines = [head]
    for r in rows:
        m = r["median"]
        lines.append(
            f"  {r['name']:<{width}}{m['rps']:>9.1f}{ms(m['p50_us']):>9}{ms(m['p99_us']):>9}"
            f"{ms(m['p999_us']):>10}{m['errors']:>8}   "
            f"{mb(r.get('rss_before_kb'))} -> {mb(r.get('rss_after_kb'))}"
        )
    return "\n".join(lines)


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    """Medians ``a`` over medians ``b``: p50, p99 and throughput."""
    return {"p50": ratio(a["p50_us"], b["p50_us"]), "p99": ratio(a["p99_us"], b["p99_us"]),
            "throughput": ratio(a["rps"], b["rps"])}


def ratios_text(r: dict[str, float | None]) -> str:
    return f"p50 {r['p50']:.2f}x, p99 {r['p99']:.2f}x, throughput {r['throughput']:.2f}"


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
            "startup_s": {"extauth": [], "reference": []},
            "scenarios": {},
        }
        self.servers: list[Server] = []
        self.provider: Provider | None = None

    # servers

    def server(self, kind: str, db: Path, config: Path,
               env: dict[str, str] | None = None) -> Server:
        port = free_port()
        if kind == "extauth":
            # Without an access log, like the reference: the same work on both sides.
            args = [sys.executable, "-m", "extauth.cli", "serve", "--db", str(db),
                    "--config", str(config), "--port", str(port), "--no-access-log"]
        else:
            args = [sys.executable, "-m", "benchmarks.reference_app", "--db", str(db),
                    "--config", str(config), "--port", str(port)]
        srv = Server(kind, args, port, self.tmp / f"{kind}-{port}.log", self.server_cpu,
                     env=env)
        self.servers.append(srv)
        srv.start()
        self.results["startup_s"][kind].append(round(srv.startup_s, 3))
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
        order = [n for n in ("reference", "extauth") if n in entry["servers"]]
        log(f"-- {key}: {entry['title']} (median of {len(entry['servers'][order[0]]['runs'])} "
            f"runs, -c{entry['connections']})")
        log(table([entry["servers"][n] for n in order]))
        if "ratio" in entry:
            r = entry["ratio"]
            log(f"  extauth/reference: throughput {r['throughput']:.2f}, "
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

        def hdr(name: str) -> dict[str, str]:
            return {"Coder-Session-Token": tokens[name]}

        device_body = json.dumps({"device_code": "dc_bench"})
        loads = {
            1: Load([("GET", API, hdr("list"), None)]),
            2: Load([("GET", f"{API}/fake", hdr("nolink"), None)]),
            3: Load([("GET", f"{API}/fake", hdr("linked"), None)]),
            4: Load([("GET", f"{API}/fake/device", hdr("device"), None),
                     ("POST", f"{API}/fake/device",
                      {**hdr("device"), "Content-Type": "application/json"}, device_body)],
                    expected=(200, 204)),
            5: Load([("GET", API, hdr("bad"), None)], expected=(401,)),
            10: Load([("GET", f"{HANDOFF}?id=fake&match=", hdr("agent"), None)]),
        }
        checks = {k: v.requests[0] for k, v in loads.items() if k != 4}
        checks[4] = loads[4].requests[1]

        if wanted & {1, 2, 3, 4, 5, 7, 9, 10}:
            log("\nStarting servers on the 10-user database")
            pair = {"reference": self.server("reference", small, config),
                    "extauth": self.server("extauth", small, config)}
            for key in (1, 2, 3, 4, 5):
                if key not in wanted:
                    continue
                self.compare(key, pair, loads[key], check=checks[key],
                             calls_per_request=key in (1, 2, 3, 4))
                if key == 3:
                    self.compare("3c1", pair, loads[3], connections=1, calls_per_request=True)
                    self.provider_own()
            if 10 in wanted:
                self.handoff(pair, loads[10], loads[3])
            if 7 in wanted:
                self.no_blocking(pair["extauth"], loads[1], tokens["slow"])
            if 9 in wanted:
                self.list_vs_get(pair["extauth"], {"list": loads[1], "get": loads[3]})
            self.stop(*pair.values())

        if 6 in wanted:
            big = self.tmp / "big.db"
            log(f"\nSeeding {big.name}: {args.big_users:,} users, {args.big_links:,} links")
            t0 = time.monotonic()
            big_tokens = seed(big, args.big_users, args.big_links)
            seed_s = time.monotonic() - t0
            self.results["fixture"]["big"] = {**db_counts(big), "seed_s": round(seed_s, 1),
                                              "file_mb": round(big.stat().st_size / 2**20, 1)}
            log(f"  {self.results['fixture']['big']}")
            pair = {"reference": self.server("reference", big, config),
                    "extauth": self.server("extauth", big, config)}
            load = Load([("GET", API, {"Coder-Session-Token": big_tokens["list"]}, None)])
            entry = self.compare(6, pair, load, check=load.requests[0], calls_per_request=True)
            base = self.results["scenarios"].get("1")
            if base is not None:
                entry["vs_10_users"] = {
                    name: {"p50_ratio": ratio(entry["servers"][name]["median"]["p50_us"],
                                              base["servers"][name]["median"]["p50_us"]),
                           "rps_ratio": ratio(entry["servers"][name]["median"]["rps"],
                                              base["servers"][name]["median"]["rps"])}
                    for name in pair}
                log("  vs scenario 1 (10 users): p50 x" + ", ".join(
                    f" {n} {v['p50_ratio']:.2f}" for n, v in entry["vs_10_users"].items()))
            self.stop(*pair.values())

        if 8 in wanted:
            self.rss_growth(small, config, loads[1])

        if 11 in wanted:
            self.listeners(config)

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
        body = json.dumps({"device_code": "dc_bench"}).encode()

        def exchange(i: int) -> None:
            status, _ = get(port, f"{API}/fake/device",
                            {"Coder-Session-Token": people[i][1],
                             "Content-Type": "application/json"}, "POST", body, timeout=30)
            if status == 204:
                by_api[i] = time.monotonic()

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(exchange, range(half)))
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
        log("\n== Headline (medians; ratio = extauth / reference)")
        log(f"  {'scenario':<58}{'ext req/s':>10}{'ref req/s':>10}{'thr.ratio':>10}"
            f"{'ext p99':>9}{'ref p99':>9}{'p99 ratio':>10}")
        for key, e in self.results["scenarios"].items():
            if "ratio" not in e:
                continue
            x, r = e["servers"]["extauth"]["median"], e["servers"]["reference"]["median"]
            log(f"  {key + ' ' + e['title'][:54]:<58}{x['rps']:>10.1f}{r['rps']:>10.1f}"
                f"{e['ratio']['throughput']:>10.2f}{ms(x['p99_us']):>9}{ms(r['p99_us']):>9}"
                f"{e['ratio']['p99']:>10.2f}")
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
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log(f"kept {self.tmp}")


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of the brief, evaluated on the medians."""
    sc = res["scenarios"]
    out: list[dict[str, Any]] = []

    def add(target: str, met: bool | None, value: str) -> None:
        out.append({"target": target, "met": met, "value": value})

    for k in ("1", "2", "5"):
        if k in sc:
            t = sc[k]["ratio"]["throughput"]
            add(f"scenario {k} throughput >= 0.6 x reference", t >= 0.6, f"{t:.2f}")
    for k in ("1", "2", "3", "4", "5", "6"):
        if k in sc and sc[k]["connections"] == 50:
            p = sc[k]["ratio"]["p99"]
            add(f"scenario {k} p99 at -c50 <= 3 x reference", p <= 3,
                f"{p:.2f}x ({ms(sc[k]['servers']['extauth']['median']['p99_us'])} vs "
                f"{ms(sc[k]['servers']['reference']['median']['p99_us'])} ms)")
    if "3c1" in sc:
        # One connection: every request calls the provider (at -c50 concurrent
        # identical validations share one call, and queueing dominates p50).
        # Counted from the provider's own p50 where it was measured (its 20 ms
        # sleep overshoots), else from the nominal 20 ms.
        own = sc["3c1"].get("provider_own", {}).get("median", {}).get("p50_us")
        base = own / 1000 if own else PROVIDER_DELAY * 1000
        p50 = sc["3c1"]["servers"]["extauth"]["median"]["p50_us"] / 1000
        ref = sc["3c1"]["servers"]["reference"]["median"]["p50_us"] / 1000 - base
        add(f"scenario 3 (-c1) extauth p50 <= 2 ms over the provider's own ({base:.2f} ms)",
            p50 - base <= 2, f"p50 {p50:.2f} ms = +{p50 - base:.2f} ms (reference +{ref:.2f} ms)")
    if "6" in sc and "vs_10_users" in sc["6"]:
        r = sc["6"]["vs_10_users"]["extauth"]["p50_ratio"]
        add("scenario 6 list p50 within 1.5 x its value on 10 users", r <= 1.5, f"{r:.2f}x")
    if "9" in sc:
        r = sc["9"]["list_over_get"]
        lst, one = (sc["9"]["servers"][n]["median"]["p50_us"] for n in ("list", "get"))
        add("scenario 9 list of 3 validated links p50 within 1.3 x one validated get (-c1)",
            r["p50"] <= 1.3, f"{r['p50']:.2f}x ({ms(lst)} vs {ms(one)} ms)")
    if "8" in sc:
        e = sc["8"]
        after = e["rss_kb"]["after_total"] / 1024
        add(f"RSS after {e['requests_total']:,} requests within 10% of after "
            f"{e['requests_first']:,}, and < 150 MB",
            e["growth"] <= 0.10 and after < 150,
            f"{e['rss_kb']['after_first'] / 1024:.1f} -> {after:.1f} MB ({e['growth']:+.1%})")
    st = res["startup_s"]["extauth"]
    if st:
        add("extauth start-up < 2 s", max(st) < 2,
            f"median {statistics.median(st):.2f} s, max {max(st):.2f} s")
    if "10" in sc and sc["10"].get("vs_get_by_id") is not None:
        r = sc["10"]["vs_get_by_id"]
        add("scenario 10: hand-off throughput >= 0.8 x get by id on the same link", r >= 0.8,
            f"{r:.2f} ({sc['10']['servers']['extauth']['median']['rps']:.0f} vs "
            f"{sc['10']['get_by_id_rps']:.0f} req/s)")
    if "11" in sc:
        e = sc["11"]
        t = e["with_over_without"]["throughput"]
        add(f"scenario 11: list throughput with {e['listeners']} listeners >= 0.8 x without",
            t >= 0.8, f"{t:.2f}")
        add("scenario 11: RSS growth with the listeners < 50 MB", e["rss_growth_mb"] < 50,
            f"+{e['rss_growth_mb']:.1f} MB")
        for key in [k for k in e if k.startswith("link_to_answer_")]:
            a = e[key]
            done = a["answered_with_token"] == a["links"] and a["max_s"] is not None
            add(f"scenario 11: every listener answered within 1 s of its link "
                f"({key.removeprefix('link_to_answer_')})",
                done and a["max_s"] < 1.0,
                f"{a['answered_with_token']}/{a['links']}, max {seconds(a['max_s'])}")
    if "7" in sc:
        r = sc["7"]["with_over_without"]
        # "Unaffected": within the run-to-run noise of this machine, taken as 1.25x.
        worst = sc["7"]["servers"]["extauth, with slow calls"]["median"]["max_us"]
        add("list latency unaffected by slow provider calls in flight "
            "(p50, p99 <= 1.25x; max < 1 s)",
            r["p50"] <= 1.25 and r["p99"] <= 1.25 and worst < 1e6,
            f"p50 {r['p50']:.2f}x, p99 {r['p99']:.2f}x with/without; "
            f"max with {ms(worst)} ms")
    return out


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
