"""The processes of a benchmark run: the servers, the fake provider, PostgreSQL,
and what they cost (resident memory, CPU time)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fixture import PROVIDER_DELAY, ROOT, SLOW_DELAY, free_port

TICKS = os.sysconf("SC_CLK_TCK")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EXTAUTH_", "CODER_EXTERNAL_AUTH_", "CODER_GITAUTH_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    # The reference reuses extauth's Links, the bare one keeps no verdicts at
    # all: by default no server reuses a provider's verdict, so scenario 3
    # measures a validation per request.
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
    cpu: int | None  # None: on any CPU (not the runner's own pinning, which children inherit)
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0
    env: dict[str, str] | None = None

    def start(self, timeout: float = 30.0) -> Server:
        cpus = str(self.cpu) if self.cpu is not None else f"0-{(os.cpu_count() or 1) - 1}"
        cmd = ["taskset", "-c", cpus, *self.args]
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

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

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


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and of every child it has had: its
    live children's, and what the ones it reaped left in its counters (a
    PostgreSQL server is a process per connection)."""
    def times(p: int) -> list[int]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone
            return [0, 0, 0, 0]
        return [int(x) for x in fields[11:15]]  # utime, stime, cutime, cstime

    total = sum(times(pid))
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += sum(times(int(child))[:2])
    return total / TICKS


class Postgres:
    """A PostgreSQL cluster of its own, started as the tests start theirs
    (``tests/postgres.py``: initdb in a temp dir, a free port on 127.0.0.1,
    an unprivileged user when run as root, durability off), and pinned to
    ``cpu`` (its backends, forked later, inherit it)."""

    def __init__(self, cpu: int | None) -> None:
        from tests.postgres import PostgresServer

        self.server = PostgresServer().start()
        assert self.server.proc is not None
        self.pid = self.server.proc.pid
        if cpu is not None:
            os.sched_setaffinity(self.pid, {cpu})

    def database(self) -> str:
        """The URL of a new, empty schema."""
        return self.server.new_schema()

    def pin(self, cpus: set[int]) -> None:
        """Run the server (and the backends it forks from now on) on ``cpus``."""
        os.sched_setaffinity(self.pid, cpus)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        self.server.stop()
