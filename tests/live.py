"""``extauth serve`` in a subprocess on a free 127.0.0.1 port, as users run it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

EXTAUTH = [sys.executable, "-m", "extauth.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cli(*args: str, db: Path | str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``extauth ARGS --db DB`` and return the finished process."""
    result = subprocess.run(
        [*EXTAUTH, *args, "--db", str(db)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"extauth {' '.join(args)} failed: {result.stderr}")
    return result


class LiveServer:
    """A running ``extauth serve``; ``url`` is its base URL."""

    def __init__(self, tmp: Path, providers: list[dict[str, Any]], *extra_args: str,
                 env: dict[str, str] | None = None, db: str | None = None) -> None:
        self.tmp = tmp
        # A SQLite file of its own, unless given a database (a PostgreSQL URL).
        self.db: Path | str = db or tmp / "live.db"
        self.config = tmp / "extauth.yaml"
        self.config.write_text(yaml.safe_dump({"external_auth": providers}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"server-{self.port}.log"
        self.args = [*EXTAUTH, "serve", "--port", str(self.port), "--db", str(self.db),
                     "--config", str(self.config), *extra_args]
        self.env = {**os.environ, "EXTAUTH_VALIDATE_RESPONSES": "true", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def token(self, name: str = "alice") -> str:
        """A session token for ``name``, created through the CLI."""
        if cli("users", "list", db=self.db).stdout.find(f"{name}\t") >= 0:
            return cli("tokens", "create", name, db=self.db).stdout.strip()
        return cli("users", "create", name, db=self.db).stdout.strip()

    def start(self, timeout: float = 20.0) -> LiveServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"extauth exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"extauth did not answer /healthz within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return log_text(self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def log_text(log: Path) -> str:
    """A child's log so far ("" before it has written anything)."""
    return log.read_text(errors="replace") if log.exists() else ""


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not end within ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def stop_drained(proc: subprocess.Popen[bytes], drain: threading.Thread | None,
                 timeout: float = 10) -> None:
    """Stop a child whose output ``drain_to`` copies: the process, then the copying
    thread, then the pipe."""
    stop_process(proc, timeout)
    if drain is not None:
        drain.join(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


def drain_to(stream: IO[bytes], log: Path) -> threading.Thread:
    """Copy a child's output to ``log`` in a thread, so that its pipe never fills up."""

    def copy() -> None:
        with open(log, "ab") as out:
            while chunk := os.read(stream.fileno(), 4096):
                out.write(chunk)
                out.flush()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread
